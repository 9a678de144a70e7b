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
    exports_streamhost_plugin_transform_rule_list_result_transformed_string_t *ret) {
  int f = field_index(&input->fields, "temperature");
  ret->len = input->len;
  ret->ptr = calloc(input->len, sizeof(*ret->ptr));  // all ok, keep
  for (uint32_t i = 0; f >= 0 && i < input->len; i++) {
    double t = input->values.ptr[f].ptr[i];
    exports_streamhost_plugin_transform_rule_transformed_t *out = &ret->ptr[i].val.ok;
    if (isnan(t)) {
      out->tag = STREAMHOST_PLUGIN_TYPES_TRANSFORMED_DROP;
      continue;
    }
    char json[64];
    snprintf(json, sizeof json, "{\"temperature_f\":%.2f}", t * 9 / 5 + 32);
    out->tag = STREAMHOST_PLUGIN_TYPES_TRANSFORMED_MERGE;
    transform_string_dup(&out->val.merge, json);
  }
  exports_streamhost_plugin_transform_rule_batch_free(input);
}
