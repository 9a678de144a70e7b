"""A streamhost anomaly rule in Python, built with componentize-py.

Flags a reading whose key's window has a mean humidity above 85%
(`humid_window`, low severity): one humid reading is noise, a humid window
is a trend worth a look.

    componentize-py -d ../../wit -w anomaly componentize app -o humidity-py.wasm
"""

import math

from wit_world import exports
from wit_world.imports import host, types
from componentize_py_types import Ok

NAME = "humidity-py"
VERSION = "1.0.0"
LIMIT = 85.0


class AnomalyRule(exports.AnomalyRule):
    # Returning is `ok`; raising `Err(message)` would refuse the configuration.
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(
            name=NAME, version=VERSION, kind=types.Kind.ANOMALY, needs=types.Needs(0), windows=[], tables=[]
        )

    def detect(self, input: types.Batch, windows: types.WindowView):
        if "humidity" not in input.fields:
            host.log(host.Level.WARN, "no humidity field configured; nothing to check")
            return [Ok([]) for _ in range(input.len)]
        means = windows.fields[input.fields.index("humidity")].mean
        out = []
        for i in range(input.len):
            mean = means[i]
            if not math.isnan(mean) and mean > LIMIT:
                out.append(Ok([types.Alert(
                    rule=NAME,
                    kind="humid_window",
                    severity=types.Severity.LOW,
                    message=f"mean humidity {mean:.1f} over {windows.counts[i]} readings is above {LIMIT:.0f}",
                )]))
            else:
                out.append(Ok([]))
        return out
