// {{name}}: a streamhost transform rule in C.
//
// Memory: the rule owns its argument and frees it before returning;
// everything it returns must come from malloc, and is freed by the
// bindings once streamhost has read it.

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transform.h"

void exports_streamhost_plugin_transform_rule_describe(
    exports_streamhost_plugin_transform_rule_plugin_info_t *ret) {
  transform_string_dup(&ret->name, "{{name}}");
  transform_string_dup(&ret->version, "0.1.0");
  ret->kind = STREAMHOST_PLUGIN_TYPES_KIND_TRANSFORM;
  ret->needs = 0;
}

static int field_index(const transform_list_string_t *fields, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < fields->len; i++) {
    if (fields->ptr[i].len == n && memcmp(fields->ptr[i].ptr, name, n) == 0) return (int)i;
  }
  return -1;
}

void exports_streamhost_plugin_transform_rule_transform(
    exports_streamhost_plugin_transform_rule_batch_t *input,
    exports_streamhost_plugin_transform_rule_transformed_batch_t *ret) {
  int f = field_index(&input->fields, "temperature");
  ret->results.len = input->len;
  ret->results.ptr = calloc(input->len, sizeof(*ret->results.ptr));  // all ok, keep
  // `merge` names a member text by its index in ret->members: at most one
  // per record here. Members every record gets would be listed once.
  ret->members.len = 0;
  ret->members.ptr = calloc(input->len, sizeof(*ret->members.ptr));
  for (uint32_t i = 0; f >= 0 && i < input->len; i++) {
    double t = input->values.ptr[f].ptr[i];
    streamhost_plugin_types_transformed_t *out = &ret->results.ptr[i].val.ok;
    if (isnan(t)) {
      out->tag = STREAMHOST_PLUGIN_TYPES_TRANSFORMED_DROP;
      continue;
    }
    char json[64];
    snprintf(json, sizeof json, "{\"temperature_f\":%.2f}", t * 9 / 5 + 32);
    transform_string_dup(&ret->members.ptr[ret->members.len], json);
    out->tag = STREAMHOST_PLUGIN_TYPES_TRANSFORMED_MERGE;
    out->val.merge = (uint32_t)ret->members.len++;
  }
  exports_streamhost_plugin_transform_rule_batch_free(input);
}
