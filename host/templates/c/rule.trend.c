// {{name}}: a streamhost trend rule in C.
//
// Memory: the rule owns its arguments and frees them before returning;
// everything it returns must come from malloc, and is freed by the
// bindings once streamhost has read it.

#include <stdlib.h>
#include <string.h>

#include "trend.h"

#define FIELD "temperature"
#define STABLE 0.5

void exports_streamhost_plugin_trend_rule_describe(
    exports_streamhost_plugin_trend_rule_plugin_info_t *ret) {
  trend_string_dup(&ret->name, "{{name}}");
  trend_string_dup(&ret->version, "0.1.0");
  ret->kind = STREAMHOST_PLUGIN_TYPES_KIND_TREND;
  ret->needs = 0;
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
  int f = field_index(&input->fields, FIELD);
  ret->len = input->len;
  ret->ptr = calloc(input->len, sizeof(*ret->ptr));  // all ok, no trend
  for (uint32_t i = 0; f >= 0 && i < input->len; i++) {
    if (windows->counts.ptr[i] < 2) continue;
    double change = windows->fields.ptr[f].last.ptr[i] - windows->fields.ptr[f].first.ptr[i];
    ret->ptr[i].val.ok.is_some = true;
    exports_streamhost_plugin_trend_rule_trend_result_t *r = &ret->ptr[i].val.ok.val;
    r->field = (uint32_t)f;  // the field, by its index in input->fields
    r->change = change;
    r->direction = change > STABLE    ? STREAMHOST_PLUGIN_TYPES_DIRECTION_INCREASING
                   : change < -STABLE ? STREAMHOST_PLUGIN_TYPES_DIRECTION_DECREASING
                                      : STREAMHOST_PLUGIN_TYPES_DIRECTION_STABLE;
  }
  exports_streamhost_plugin_trend_rule_batch_free(input);
  exports_streamhost_plugin_trend_rule_window_view_free(windows);
}
