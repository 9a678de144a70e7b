"""{{name}}: a streamhost anomaly rule in Python.

componentize-py generates the `wit_world` package from wit/: the class
must be called `AnomalyRule`, at the top level of this module, and
subclass `exports.AnomalyRule`. Each record's answer is `Ok(list of
alerts)` or `Err(reason)` (the record goes to the dead-letter topic).
"""

from wit_world import exports
from wit_world.imports import host, types
from componentize_py_types import Ok

NAME = "{{name}}"
LIMIT = 30.0


class AnomalyRule(exports.AnomalyRule):
    def describe(self) -> types.PluginInfo:
        # needs: types.Needs(0) for nothing, or e.g. types.Needs.KEYS |
        # types.Needs.JSON to be passed keys and JSON text.
        return types.PluginInfo(name=NAME, version="0.1.0", kind=types.Kind.ANOMALY, needs=types.Needs(0))

    def detect(self, input: types.Batch, windows: types.WindowView):
        if "temperature" not in input.fields:
            host.log(host.Level.WARN, "no temperature field configured")
            return [Ok([]) for _ in range(input.len)]
        f = input.fields.index("temperature")
        # Columns: one list per field, one value per record (NaN if absent).
        temperature = input.values[f]
        mean = windows.fields[f].mean
        out = []
        for i in range(input.len):
            alerts = []
            if temperature[i] > LIMIT:
                alerts.append(types.Alert(
                    rule=NAME,
                    kind="too_hot",
                    severity=types.Severity.HIGH,
                    message=f"temperature {temperature[i]} is above {LIMIT} (window mean {mean[i]:.2f})",
                ))
            out.append(Ok(alerts))
        return out
