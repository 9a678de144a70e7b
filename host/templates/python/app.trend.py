"""{{name}}: a streamhost trend rule in Python.

The class must be called `TrendRule`, at the top level of this module.
Each record's answer is `Ok(TrendResult or None)` or `Err(reason)`.
`describe` returns the rule's info, or raises `Err(message)` to refuse its
configuration. The direction compares two moving averages: the last
minute's mean temperature against the mean of the whole `--window`.
"""

import math
from functools import cache

from wit_world import exports
from wit_world.imports import store, types
from componentize_py_types import Err, Ok

FIELD = "temperature"


def number(key: str, default: float) -> float:
    """The configuration's number for `key`, or `default` when it sets none.

    Configuration comes as text from the `[config]` table of {{name}}.toml
    beside the plugin, `--plugin-config {{name}}.stable=1`, or
    `streamhost plugins config {{name}} stable=1`.
    """
    text = store.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise Err(f'{key} "{text}" is not a number')
    return value


@cache
def stable() -> float:
    """Differences smaller than this are stable: `stable`, 0.5 unless
    configured. Read once (`cache`): the configuration never changes within
    an instance."""
    value = number("stable", 0.5)
    if value < 0:
        raise Err(f"stable {value:g} is negative")
    return value


class TrendRule(exports.TrendRule):
    def describe(self) -> types.PluginInfo:
        stable()  # raises Err(message): the configuration is refused
        return types.PluginInfo(
            name="{{name}}",
            version="0.1.0",
            kind=types.Kind.TREND,
            needs=types.Needs(0),
            # A window of its own besides the `--window` one: the last
            # minute's mean temperature, passed in `windows.declared[0]`.
            windows=[types.WindowSpec(length_ms=60_000, fields=[FIELD], aggregates=[types.Aggregate.MEAN])],
            tables=[],
        )

    def trend(self, input: types.Batch, windows: types.WindowView):
        if FIELD not in input.fields:
            return [Ok(None) for _ in range(input.len)]
        threshold = stable()
        f = input.fields.index(FIELD)
        # The `--window` statistics of the field, and the declared window's
        # first field (temperature), one column per aggregate as declared.
        window_mean = windows.fields[f].mean
        minute_mean = windows.declared[0].fields[0].columns[0]
        out = []
        for i in range(input.len):
            if windows.counts[i] < 2:
                out.append(Ok(None))
                continue
            change = minute_mean[i] - window_mean[i]
            if change > threshold:
                direction = types.Direction.INCREASING
            elif change < -threshold:
                direction = types.Direction.DECREASING
            else:
                direction = types.Direction.STABLE
            out.append(Ok(types.TrendResult(field=f, direction=direction, change=change)))
        return out
