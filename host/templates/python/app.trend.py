"""{{name}}: a streamhost trend rule in Python.

The class must be called `TrendRule`, at the top level of this module.
Each record's answer is `Ok(TrendResult or None)` or `Err(reason)`.
"""

from wit_world import exports
from wit_world.imports import types
from componentize_py_types import Ok

FIELD = "temperature"
STABLE = 0.5


class TrendRule(exports.TrendRule):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(name="{{name}}", version="0.1.0", kind=types.Kind.TREND, needs=types.Needs(0))

    def trend(self, input: types.Batch, windows: types.WindowView):
        if FIELD not in input.fields:
            return [Ok(None) for _ in range(input.len)]
        f = input.fields.index(FIELD)
        w = windows.fields[f]
        out = []
        for i in range(input.len):
            if windows.counts[i] < 2:
                out.append(Ok(None))
                continue
            change = w.last[i] - w.first[i]
            if change > STABLE:
                direction = types.Direction.INCREASING
            elif change < -STABLE:
                direction = types.Direction.DECREASING
            else:
                direction = types.Direction.STABLE
            out.append(Ok(types.TrendResult(field=f, direction=direction, change=change)))
        return out
