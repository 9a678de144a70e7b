"""crossover: an example streamhost trend rule in Python, built with
componentize-py, that declares two windows and reads its configuration (see
docs/rules-cookbook.md).

It compares two moving averages of `temperature`, each over a window the
rule declares: a short one of `short_ms` and a long one of `long_ms`, both
with the aggregate `mean`. When the short mean is above the long one by
more than `margin` (degrees) the temperature is `increasing`, below it by
more than `margin` `decreasing`, else `stable`; `change` is
(short - long) / |long|, NaN when the long mean is 0. A record whose
windows hold no temperature gets no answer.

    key        default  meaning
    short_ms   60000    the short window (1 minute)
    long_ms    900000   the long window (15 minutes)
    margin     0.5      differences up to this are stable

`describe` refuses a value that is not a number, a window outside 1 ms to
7 days, a negative margin, and a short window that is not shorter than the
long one. Built by `cargo xtask plugins` into target/plugins/crossover-py.wasm:

    componentize-py -d ../../wit -w trend componentize app -o crossover-py.wasm
"""

import math
from functools import cache

from wit_world import exports
from wit_world.imports import store, types
from componentize_py_types import Err, Ok

NAME = "crossover"
VERSION = "1.0.0"
FIELD = "temperature"
MAX_WINDOW_MS = 7 * 86_400_000


def number(key: str, default: float) -> float:
    """The configuration's number for `key`, or `default` when it sets none."""
    try:
        text = store.get(key)
    except Err as e:
        raise Err(f"reading configuration key {key}: {e.value.value}")
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise Err(f'{key} "{text}" is not a number')
    return value


def window_ms(key: str, default: int) -> int:
    """The configuration's window length for `key`, in milliseconds."""
    value = number(key, default)
    if value != int(value) or not 1 <= value <= MAX_WINDOW_MS:
        raise Err(f"{key} {value:.15g} is not a whole number of milliseconds from 1 to {MAX_WINDOW_MS} (7 days)")
    return int(value)


@cache
def config() -> tuple[int, int, float]:
    """(short_ms, long_ms, margin), or `Err` with why they are refused.
    Read once (`cache`): the configuration never changes within an
    instance."""
    short = window_ms("short_ms", 60_000)
    long = window_ms("long_ms", 900_000)
    margin = number("margin", 0.5)
    if margin < 0:
        raise Err(f"margin {margin:.15g} is negative")
    if short >= long:
        raise Err(f"short_ms {short} is not below long_ms {long}")
    return short, long, margin


def crossover(short: float, long: float, margin: float):
    """(direction, change) of a short mean against a long one, or None when
    either is absent (NaN)."""
    if math.isnan(short) or math.isnan(long):
        return None
    diff = short - long
    if diff > margin:
        direction = types.Direction.INCREASING
    elif diff < -margin:
        direction = types.Direction.DECREASING
    else:
        direction = types.Direction.STABLE
    change = diff / abs(long) if long != 0 else math.nan
    return direction, change


class TrendRule(exports.TrendRule):
    def describe(self) -> types.PluginInfo:
        short, long, _ = config()  # raises Err(message): the configuration is refused
        mean = [types.Aggregate.MEAN]
        return types.PluginInfo(
            name=NAME,
            version=VERSION,
            kind=types.Kind.TREND,
            needs=types.Needs(0),
            # Their means arrive in windows.declared[0] and [1], in this order.
            windows=[
                types.WindowSpec(length_ms=short, fields=[FIELD], aggregates=mean),
                types.WindowSpec(length_ms=long, fields=[FIELD], aggregates=mean),
            ],
            tables=[],
        )

    def trend(self, input: types.Batch, windows: types.WindowView):
        _, _, margin = config()
        if len(windows.declared) < 2:
            return [Err("the host passed fewer than the two declared windows") for _ in range(input.len)]
        if FIELD not in input.fields:
            return [Ok(None) for _ in range(input.len)]
        f = input.fields.index(FIELD)
        # declared[w].fields[0] is the window's one field (temperature);
        # its columns[0] the one aggregate asked for (mean).
        short = windows.declared[0].fields[0].columns[0]
        long = windows.declared[1].fields[0].columns[0]
        out = []
        for i in range(input.len):
            found = crossover(short[i], long[i], margin)
            if found is None:
                out.append(Ok(None))
            else:
                direction, change = found
                out.append(Ok(types.TrendResult(field=f, direction=direction, change=change)))
        return out
