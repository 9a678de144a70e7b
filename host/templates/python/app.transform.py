"""{{name}}: a streamhost transform rule in Python.

The class must be called `TransformRule`, at the top level of this module.
Each record's answer is `Ok(Transformed_...)` or `Err(reason)`: keep it,
drop it, replace its JSON text, or merge members into it. A merge names
a JSON object text in the batch's `members` by its index; members every
record gets are listed once and shared. `describe` returns the rule's
info, or raises `Err(message)` to refuse its configuration.
"""

import math
from functools import cache

from wit_world import exports
from wit_world.imports import store, types
from componentize_py_types import Err, Ok


def number(key: str, default: float) -> float:
    """The configuration's number for `key`, or `default` when it sets none.

    Configuration comes as text from the `[config]` table of {{name}}.toml
    beside the plugin, `--plugin-config {{name}}.digits=1`, or
    `streamhost plugins config {{name}} digits=1`.
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
def digits() -> int:
    """Decimals of `temperature_f`: `digits`, 2 unless configured. Read
    once (`cache`): the configuration never changes within an instance."""
    value = number("digits", 2)
    if value not in range(0, 7):
        raise Err(f"digits {value:g} is not a whole number from 0 to 6")
    return int(value)


class TransformRule(exports.TransformRule):
    def describe(self) -> types.PluginInfo:
        digits()  # raises Err(message): the configuration is refused
        # Declared windows are for trend and anomaly rules only.
        return types.PluginInfo(
            name="{{name}}", version="0.1.0", kind=types.Kind.TRANSFORM, needs=types.Needs(0), windows=[], tables=[]
        )

    def transform(self, input: types.Batch):
        if "temperature" not in input.fields:
            return types.TransformedBatch(members=[], results=[Ok(types.Transformed_Keep()) for _ in range(input.len)])
        places = digits()
        temperature = input.values[input.fields.index("temperature")]
        members, out = [], []
        for t in temperature:
            if math.isnan(t):
                out.append(Ok(types.Transformed_Drop()))
            else:
                members.append(f'{{"temperature_f":{t * 9 / 5 + 32:.{places}f}}}')
                out.append(Ok(types.Transformed_Merge(len(members) - 1)))
        return types.TransformedBatch(members=members, results=out)
