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

// The configuration's number for `key` into `*out`, or `fallback` when it
// sets none; false, with a message in `err` (malloc'd), when the value is
// not a number. Configuration comes as text from the `[config]` table of
// {{name}}.toml beside the plugin, `--plugin-config {{name}}.digits=1`, or
// `streamhost plugins config {{name}} digits=1`.
static bool config_number(const char *key, double fallback, double *out, transform_string_t *err) {
  transform_string_t k;
  transform_string_set(&k, key);  // borrowed, not copied
  transform_option_string_t value;
  wasi_config_store_error_t e;
  char message[160];
  if (!wasi_config_store_get(&k, &value, &e)) {
    wasi_config_store_error_free(&e);
    snprintf(message, sizeof message, "reading %s failed", key);
    transform_string_dup(err, message);
    return false;
  }
  if (!value.is_some) {
    *out = fallback;
    return true;
  }
  char text[64] = "";
  size_t n = value.val.len < sizeof text - 1 ? value.val.len : sizeof text - 1;
  memcpy(text, value.val.ptr, n);
  bool whole = n == value.val.len;
  transform_string_free(&value.val);
  char *end;
  *out = strtod(text, &end);
  if (!whole || end == text || *end != '\0' || !isfinite(*out)) {
    snprintf(message, sizeof message, "%s \"%s\" is not a number", key, text);
    transform_string_dup(err, message);
    return false;
  }
  return true;
}

// Decimals of `temperature_f`: `digits`, 2 unless configured. Read once:
// the configuration never changes within an instance.
static double digits;
static bool configured = false;

static bool config(transform_string_t *err) {
  if (configured) return true;
  if (!config_number("digits", 2, &digits, err)) return false;
  if (digits < 0 || digits > 6 || digits != floor(digits)) {
    char message[80];
    snprintf(message, sizeof message, "digits %g is not a whole number from 0 to 6", digits);
    transform_string_dup(err, message);
    return false;
  }
  configured = true;
  return true;
}

bool exports_streamhost_plugin_transform_rule_describe(
    exports_streamhost_plugin_transform_rule_plugin_info_t *ret, transform_string_t *err) {
  // Returning false refuses the configuration, with the message in `err`.
  if (!config(err)) return false;
  transform_string_dup(&ret->name, "{{name}}");
  transform_string_dup(&ret->version, "0.1.0");
  ret->kind = STREAMHOST_PLUGIN_TYPES_KIND_TRANSFORM;
  ret->needs = 0;
  // Declared windows are for trend and anomaly rules only: empty lists.
  ret->windows.ptr = NULL;
  ret->windows.len = 0;
  ret->tables.ptr = NULL;
  ret->tables.len = 0;
  return true;
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
  transform_string_t refused;
  if (!config(&refused)) abort();  // refused configuration never serves
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
    snprintf(json, sizeof json, "{\"temperature_f\":%.*f}", (int)digits, t * 9 / 5 + 32);
    transform_string_dup(&ret->members.ptr[ret->members.len], json);
    out->tag = STREAMHOST_PLUGIN_TYPES_TRANSFORMED_MERGE;
    out->val.merge = (uint32_t)ret->members.len++;
  }
  exports_streamhost_plugin_transform_rule_batch_free(input);
}
