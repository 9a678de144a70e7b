// {{name}}: a streamhost trend rule in C. The direction compares two
// moving averages: the last minute's mean temperature against the mean of
// the whole `--window`.
//
// Memory: the rule owns its arguments and frees them before returning;
// everything it returns must come from malloc, and is freed by the
// bindings once streamhost has read it.

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trend.h"

#define FIELD "temperature"

// The configuration's number for `key` into `*out`, or `fallback` when it
// sets none; false, with a message in `err` (malloc'd), when the value is
// not a number. Configuration comes as text from the `[config]` table of
// {{name}}.toml beside the plugin, `--plugin-config {{name}}.stable=1`, or
// `streamhost plugins config {{name}} stable=1`.
static bool config_number(const char *key, double fallback, double *out, trend_string_t *err) {
  trend_string_t k;
  trend_string_set(&k, key);  // borrowed, not copied
  trend_option_string_t value;
  wasi_config_store_error_t e;
  char message[160];
  if (!wasi_config_store_get(&k, &value, &e)) {
    wasi_config_store_error_free(&e);
    snprintf(message, sizeof message, "reading %s failed", key);
    trend_string_dup(err, message);
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
  trend_string_free(&value.val);
  char *end;
  *out = strtod(text, &end);
  if (!whole || end == text || *end != '\0' || !isfinite(*out)) {
    snprintf(message, sizeof message, "%s \"%s\" is not a number", key, text);
    trend_string_dup(err, message);
    return false;
  }
  return true;
}

// Differences smaller than this are stable: `stable`, 0.5 unless
// configured. Read once: the configuration never changes within an
// instance.
static double stable;
static bool configured = false;

static bool config(trend_string_t *err) {
  if (configured) return true;
  if (!config_number("stable", 0.5, &stable, err)) return false;
  if (stable < 0) {
    char message[80];
    snprintf(message, sizeof message, "stable %g is negative", stable);
    trend_string_dup(err, message);
    return false;
  }
  configured = true;
  return true;
}

bool exports_streamhost_plugin_trend_rule_describe(
    exports_streamhost_plugin_trend_rule_plugin_info_t *ret, trend_string_t *err) {
  // Returning false refuses the configuration, with the message in `err`.
  if (!config(err)) return false;
  trend_string_dup(&ret->name, "{{name}}");
  trend_string_dup(&ret->version, "0.1.0");
  ret->kind = STREAMHOST_PLUGIN_TYPES_KIND_TREND;
  ret->needs = 0;
  // A window of its own besides the `--window` one: the last minute's mean
  // temperature, passed in windows->declared.ptr[0].
  streamhost_plugin_types_window_spec_t *w = malloc(sizeof *w);
  w->length_ms = 60000;
  w->fields.len = 1;
  w->fields.ptr = malloc(sizeof *w->fields.ptr);
  trend_string_dup(&w->fields.ptr[0], FIELD);
  w->aggregates.len = 1;
  w->aggregates.ptr = malloc(sizeof *w->aggregates.ptr);
  w->aggregates.ptr[0] = STREAMHOST_PLUGIN_TYPES_AGGREGATE_MEAN;
  ret->windows.ptr = w;
  ret->windows.len = 1;
  ret->tables.ptr = NULL;
  ret->tables.len = 0;
  return true;
}

static int field_index(const trend_list_string_t *fields, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < fields->len; i++) {
    if (fields->ptr[i].len == n && memcmp(fields->ptr[i].ptr, name, n) == 0) return (int)i;
  }
  return -1;
}

void exports_streamhost_plugin_trend_rule_trend(
    exports_streamhost_plugin_trend_rule_batch_t *input,
    exports_streamhost_plugin_trend_rule_window_view_t *windows,
    exports_streamhost_plugin_trend_rule_list_result_option_trend_result_string_t *ret) {
  trend_string_t refused;
  if (!config(&refused)) abort();  // refused configuration never serves
  int f = field_index(&input->fields, FIELD);
  // The declared window's first field (temperature), one column per
  // aggregate as declared.
  double *minute_mean = windows->declared.ptr[0].fields.ptr[0].columns.ptr[0].ptr;
  ret->len = input->len;
  ret->ptr = calloc(input->len, sizeof(*ret->ptr));  // all ok, no trend
  for (uint32_t i = 0; f >= 0 && i < input->len; i++) {
    if (windows->counts.ptr[i] < 2) continue;
    double change = minute_mean[i] - windows->fields.ptr[f].mean.ptr[i];
    ret->ptr[i].val.ok.is_some = true;
    exports_streamhost_plugin_trend_rule_trend_result_t *r = &ret->ptr[i].val.ok.val;
    r->field = (uint32_t)f;  // the field, by its index in input->fields
    r->change = change;
    r->direction = change > stable    ? STREAMHOST_PLUGIN_TYPES_DIRECTION_INCREASING
                   : change < -stable ? STREAMHOST_PLUGIN_TYPES_DIRECTION_DECREASING
                                      : STREAMHOST_PLUGIN_TYPES_DIRECTION_STABLE;
  }
  exports_streamhost_plugin_trend_rule_batch_free(input);
  exports_streamhost_plugin_trend_rule_window_view_free(windows);
}
