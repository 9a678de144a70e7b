"""{{name}}: a streamhost transform rule in Python.

The class must be called `TransformRule`, at the top level of this module.
Each record's answer is `Ok(Transformed_...)` or `Err(reason)`: keep it,
drop it, replace its JSON text, or merge members into it. A merge names
a JSON object text in the batch's `members` by its index; members every
record gets are listed once and shared.
"""

import math

from wit_world import exports
from wit_world.imports import types
from componentize_py_types import Ok


class TransformRule(exports.TransformRule):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(name="{{name}}", version="0.1.0", kind=types.Kind.TRANSFORM, needs=types.Needs(0))

    def transform(self, input: types.Batch):
        if "temperature" not in input.fields:
            return types.TransformedBatch(members=[], results=[Ok(types.Transformed_Keep()) for _ in range(input.len)])
        temperature = input.values[input.fields.index("temperature")]
        members, out = [], []
        for t in temperature:
            if math.isnan(t):
                out.append(Ok(types.Transformed_Drop()))
            else:
                members.append(f'{{"temperature_f":{t * 9 / 5 + 32:.2f}}}')
                out.append(Ok(types.Transformed_Merge(len(members) - 1)))
        return types.TransformedBatch(members=members, results=out)
