// {{name}}: a streamhost anomaly rule in C.
//
// Memory: the rule owns its arguments and frees them before returning;
// everything it returns (strings, lists) must come from malloc, and is
// freed by the bindings once streamhost has read it.
// stdio (printf, fprintf) uses WASI 0.1; `streamhost componentize` adds
// the adapter, and streamhost writes the output to its log.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anomaly.h"

#define NAME "{{name}}"
#define LIMIT 30.0

void exports_streamhost_plugin_anomaly_rule_describe(
    exports_streamhost_plugin_anomaly_rule_plugin_info_t *ret) {
  anomaly_string_dup(&ret->name, NAME);
  anomaly_string_dup(&ret->version, "0.1.0");
  ret->kind = STREAMHOST_PLUGIN_TYPES_KIND_ANOMALY;
  ret->needs = 0;  // or STREAMHOST_PLUGIN_TYPES_NEEDS_KEYS | ..._JSON
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
  int f = field_index(&input->fields, "temperature");
  ret->len = input->len;
  ret->ptr = calloc(input->len, sizeof(*ret->ptr));  // all ok, no alerts
  for (uint32_t i = 0; f >= 0 && i < input->len; i++) {
    // Columns: values.ptr[field].ptr[record] (NaN if the record lacks it).
    double t = input->values.ptr[f].ptr[i];
    if (!(t > LIMIT)) continue;
    exports_streamhost_plugin_anomaly_rule_alert_t *a = malloc(sizeof(*a));
    char message[128];
    snprintf(message, sizeof message, "temperature %g is above %g (window mean %.2f)", t, LIMIT,
             windows->fields.ptr[f].mean.ptr[i]);
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
