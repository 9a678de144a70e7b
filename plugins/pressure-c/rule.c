// A streamhost anomaly rule in C: flags a reading whose pressure is more
// than 9.5 hPa away from its window's mean (`pressure_swing`, low), once
// the window holds two readings or more.
//
// Built by `cargo xtask plugins` (see README, "Writing a rule in C"):
//   wit-bindgen c ../../wit --world anomaly --out-dir bindings
//   clang --target=wasm32-wasi -mexec-model=reactor -O2 -Ibindings \
//       rule.c bindings/anomaly.c bindings/anomaly_component_type.o -o core.wasm
//   streamhost componentize core.wasm -o pressure-c.wasm
//
// Memory rules of the generated bindings:
// - the rule owns its arguments: free them (`..._batch_free`,
//   `..._window_view_free`) before returning;
// - what it returns is freed by the bindings after the host has read it, so
//   every string and list in it must come from malloc (`anomaly_string_dup`
//   copies a C string into one).
// stdio goes through WASI 0.1, which `streamhost componentize` adapts to
// WASI 0.2; streamhost writes it to its log.

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anomaly.h"

#define NAME "pressure-c"
#define VERSION "1.0.0"
#define SWING 9.5

typedef exports_streamhost_plugin_anomaly_rule_alert_t alert_t;
typedef exports_streamhost_plugin_anomaly_rule_list_result_list_alert_string_t results_t;

// Answers `ok` (true, with `ret` filled) or refuses its configuration
// (false, with a message in `err`); this rule reads none.
bool exports_streamhost_plugin_anomaly_rule_describe(
    exports_streamhost_plugin_anomaly_rule_plugin_info_t *ret, anomaly_string_t *err) {
  (void)err;
  anomaly_string_dup(&ret->name, NAME);
  anomaly_string_dup(&ret->version, VERSION);
  ret->kind = STREAMHOST_PLUGIN_TYPES_KIND_ANOMALY;
  ret->needs = 0;
  // No declared windows, no tables: empty lists.
  ret->windows.ptr = NULL;
  ret->windows.len = 0;
  ret->tables.ptr = NULL;
  ret->tables.len = 0;
  return true;
}

// The index of `name` among the batch's fields, or -1.
static int field_index(const anomaly_list_string_t *fields, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < fields->len; i++) {
    if (fields->ptr[i].len == n && memcmp(fields->ptr[i].ptr, name, n) == 0) {
      return (int)i;
    }
  }
  return -1;
}

void exports_streamhost_plugin_anomaly_rule_detect(
    exports_streamhost_plugin_anomaly_rule_batch_t *input,
    exports_streamhost_plugin_anomaly_rule_window_view_t *windows,
    results_t *ret) {
  static int greeted = 0;
  if (!greeted) {
    greeted = 1;
    fprintf(stderr, "%s %s: first batch of %u records\n", NAME, VERSION, input->len);
  }
  int f = field_index(&input->fields, "pressure");
  ret->len = input->len;
  ret->ptr = calloc(input->len, sizeof(*ret->ptr));
  for (uint32_t i = 0; i < input->len; i++) {
    ret->ptr[i].is_err = false;
    ret->ptr[i].val.ok.len = 0;
    ret->ptr[i].val.ok.ptr = NULL;
    if (f < 0 || windows->counts.ptr[i] < 2) {
      continue;
    }
    double p = input->values.ptr[f].ptr[i];
    double mean = windows->fields.ptr[f].mean.ptr[i];
    if (isnan(p) || fabs(p - mean) <= SWING) {
      continue;
    }
    alert_t *a = malloc(sizeof(alert_t));
    char message[128];
    snprintf(message, sizeof message, "pressure %.2f is %.2f from the window mean %.2f",
             p, p - mean, mean);
    anomaly_string_dup(&a->rule, NAME);
    anomaly_string_dup(&a->kind, "pressure_swing");
    a->severity = STREAMHOST_PLUGIN_TYPES_SEVERITY_LOW;
    anomaly_string_dup(&a->message, message);
    ret->ptr[i].val.ok.ptr = a;
    ret->ptr[i].val.ok.len = 1;
  }
  exports_streamhost_plugin_anomaly_rule_batch_free(input);
  exports_streamhost_plugin_anomaly_rule_window_view_free(windows);
}
