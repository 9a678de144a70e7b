// {{name}}: a streamhost anomaly rule in C.
//
// Memory: the rule owns its arguments and frees them before returning;
// everything it returns (strings, lists) must come from malloc, and is
// freed by the bindings once streamhost has read it.
// stdio (printf, fprintf) uses WASI 0.1; `streamhost componentize` adds
// the adapter, and streamhost writes the output to its log.

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anomaly.h"

#define NAME "{{name}}"

// The configuration's number for `key` into `*out`, or `fallback` when it
// sets none; false, with a message in `err` (malloc'd), when the value is
// not a number. Configuration comes as text from the `[config]` table of
// {{name}}.toml beside the plugin, `--plugin-config {{name}}.limit=35`, or
// `streamhost plugins config {{name}} limit=35`.
static bool config_number(const char *key, double fallback, double *out, anomaly_string_t *err) {
  anomaly_string_t k;
  anomaly_string_set(&k, key);  // borrowed, not copied
  anomaly_option_string_t value;
  wasi_config_store_error_t e;
  char message[160];
  if (!wasi_config_store_get(&k, &value, &e)) {
    wasi_config_store_error_free(&e);
    snprintf(message, sizeof message, "reading %s failed", key);
    anomaly_string_dup(err, message);
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
  anomaly_string_free(&value.val);
  char *end;
  *out = strtod(text, &end);
  if (!whole || end == text || *end != '\0' || !isfinite(*out)) {
    snprintf(message, sizeof message, "%s \"%s\" is not a number", key, text);
    anomaly_string_dup(err, message);
    return false;
  }
  return true;
}

// Alert above this temperature: `limit`, 30 unless configured. Read once:
// the configuration never changes within an instance.
static double limit;
static bool configured = false;

static bool config(anomaly_string_t *err) {
  if (!configured) configured = config_number("limit", 30.0, &limit, err);
  return configured;
}

bool exports_streamhost_plugin_anomaly_rule_describe(
    exports_streamhost_plugin_anomaly_rule_plugin_info_t *ret, anomaly_string_t *err) {
  // Returning false refuses the configuration, with the message in `err`.
  if (!config(err)) return false;
  anomaly_string_dup(&ret->name, NAME);
  anomaly_string_dup(&ret->version, "0.1.0");
  ret->kind = STREAMHOST_PLUGIN_TYPES_KIND_ANOMALY;
  ret->needs = 0;  // or STREAMHOST_PLUGIN_TYPES_NEEDS_KEYS | ..._JSON
  // A window of its own besides the `--window` one: the last minute's mean
  // and standard deviation of the temperature, passed in
  // windows->declared.ptr[0].
  streamhost_plugin_types_window_spec_t *w = malloc(sizeof *w);
  w->length_ms = 60000;
  w->fields.len = 1;
  w->fields.ptr = malloc(sizeof *w->fields.ptr);
  anomaly_string_dup(&w->fields.ptr[0], "temperature");
  w->aggregates.len = 2;
  w->aggregates.ptr = malloc(2 * sizeof *w->aggregates.ptr);
  w->aggregates.ptr[0] = STREAMHOST_PLUGIN_TYPES_AGGREGATE_MEAN;
  w->aggregates.ptr[1] = STREAMHOST_PLUGIN_TYPES_AGGREGATE_STDDEV;
  ret->windows.ptr = w;
  ret->windows.len = 1;
  ret->tables.ptr = NULL;
  ret->tables.len = 0;
  return true;
}

static int field_index(const anomaly_list_string_t *fields, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < fields->len; i++) {
    if (fields->ptr[i].len == n && memcmp(fields->ptr[i].ptr, name, n) == 0) return (int)i;
  }
  return -1;
}

void exports_streamhost_plugin_anomaly_rule_detect(
    exports_streamhost_plugin_anomaly_rule_batch_t *input,
    exports_streamhost_plugin_anomaly_rule_window_view_t *windows,
    exports_streamhost_plugin_anomaly_rule_list_result_list_alert_string_t *ret) {
  anomaly_string_t refused;
  if (!config(&refused)) abort();  // refused configuration never serves
  int f = field_index(&input->fields, "temperature");
  // The declared window's first field (temperature): one column per
  // aggregate, in the order declared.
  anomaly_list_list_f64_t *minute = &windows->declared.ptr[0].fields.ptr[0].columns;
  ret->len = input->len;
  ret->ptr = calloc(input->len, sizeof(*ret->ptr));  // all ok, no alerts
  for (uint32_t i = 0; f >= 0 && i < input->len; i++) {
    // Columns: values.ptr[field].ptr[record] (NaN if the record lacks it).
    double t = input->values.ptr[f].ptr[i];
    if (!(t > limit)) continue;
    exports_streamhost_plugin_anomaly_rule_alert_t *a = malloc(sizeof(*a));
    char message[160];
    snprintf(message, sizeof message,
             "temperature %g is above %g (last minute: mean %.2f, stddev %.2f)", t, limit,
             minute->ptr[0].ptr[i], minute->ptr[1].ptr[i]);
    anomaly_string_dup(&a->rule, NAME);
    anomaly_string_dup(&a->kind, "too_hot");
    a->severity = STREAMHOST_PLUGIN_TYPES_SEVERITY_HIGH;
    anomaly_string_dup(&a->message, message);
    ret->ptr[i].val.ok.ptr = a;
    ret->ptr[i].val.ok.len = 1;
  }
  exports_streamhost_plugin_anomaly_rule_batch_free(input);
  exports_streamhost_plugin_anomaly_rule_window_view_free(windows);
}
