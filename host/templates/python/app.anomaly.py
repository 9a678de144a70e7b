"""{{name}}: a streamhost anomaly rule in Python.

componentize-py generates the `wit_world` package from wit/: the class
must be called `AnomalyRule`, at the top level of this module, and
subclass `exports.AnomalyRule`. Each record's answer is `Ok(list of
alerts)` or `Err(reason)` (the record goes to the dead-letter topic).
`describe` returns the rule's info, or raises `Err(message)` to refuse its
configuration.
"""

import math
from functools import cache

from wit_world import exports
from wit_world.imports import host, store, types
from componentize_py_types import Err, Ok

NAME = "{{name}}"


def number(key: str, default: float) -> float:
    """The configuration's number for `key`, or `default` when it sets none.

    Configuration comes as text from the `[config]` table of {{name}}.toml
    beside the plugin, `--plugin-config {{name}}.limit=35`, or
    `streamhost plugins config {{name}} limit=35`.
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
def limit() -> float:
    """Alert above this temperature: `limit`, 30 unless configured. Read
    once (`cache`): the configuration never changes within an instance."""
    return number("limit", 30.0)


class AnomalyRule(exports.AnomalyRule):
    def describe(self) -> types.PluginInfo:
        limit()  # raises Err(message): the configuration is refused
        return types.PluginInfo(
            name=NAME,
            version="0.1.0",
            kind=types.Kind.ANOMALY,
            # needs: types.Needs(0) for nothing, or e.g. types.Needs.KEYS |
            # types.Needs.JSON to be passed keys and JSON text.
            needs=types.Needs(0),
            # A window of its own besides the `--window` one: the last
            # minute's mean and standard deviation of the temperature,
            # passed in `windows.declared[0]`.
            windows=[
                types.WindowSpec(
                    length_ms=60_000,
                    fields=["temperature"],
                    aggregates=[types.Aggregate.MEAN, types.Aggregate.STDDEV],
                )
            ],
            tables=[],
        )

    def detect(self, input: types.Batch, windows: types.WindowView):
        if "temperature" not in input.fields:
            host.log(host.Level.WARN, "no temperature field configured")
            return [Ok([]) for _ in range(input.len)]
        above = limit()
        # Columns: one list per field, one value per record (NaN if absent).
        temperature = input.values[input.fields.index("temperature")]
        # The declared window's first field (temperature): one column per
        # aggregate, in the order declared.
        mean, stddev = windows.declared[0].fields[0].columns
        out = []
        for i in range(input.len):
            alerts = []
            if temperature[i] > above:
                alerts.append(types.Alert(
                    rule=NAME,
                    kind="too_hot",
                    severity=types.Severity.HIGH,
                    message=f"temperature {temperature[i]} is above {above:g}"
                    f" (last minute: mean {mean[i]:.2f}, stddev {stddev[i]:.2f})",
                ))
            out.append(Ok(alerts))
        return out
