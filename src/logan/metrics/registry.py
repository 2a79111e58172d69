"""Metric registry: `@register_metric("name", ...)` on a per-token function `(TokenPair) -> Tensor[N]`.

Every metric returns one value per token and says how it is used:

- `needs`: "noise" (clean vs noisy pass, per std: LOGAN), "clean" (the clean pass and the target tokens
  only: perplexity, Min-K%, entropies), or "augment" (clean vs the VL-MIA augmentations: aug-KL);
- `aggregate`: "max_k" (mean of the K % largest values; K = 0: the largest), "min_k" (the smallest) or
  "max_k_sum" (their sum: the original's aug-KL);
- `member_when`: "low" if members have lower values (score = -value) or "high" (score = +value), so every
  score is "higher = more likely member" and the orientation is written down once, here;
- `description`: one line for `logan list metrics` (default: the first line of the function's docstring).

The decorator checks all of this when the metric registers, and calls the function once on a small
pair exactly as the engine will (a "clean" metric gets no noisy logits), so a metric that reads an
input the engine does not give it fails at import, not in the middle of a run.

A metric family is one module listed in `_FAMILIES`; adding a metric is one function with the decorator.
Families of other installed distributions come through the `logan.metrics` entry points
(`logan.plugins`) and are imported the first time metrics are looked up or listed; a built-in name wins.

Conventions (`img_metrics.compat`): "logan" (the default: LOGAN's documented definitions) or "original"
(the original code's, to reproduce published numbers). A metric the original defines otherwise is
registered once more with `compat="original"` (`metrics/original.py`); `get_metric(name, compat=...)`
gives the convention's definition, LOGAN's where the two agree. `DEFINITIONS` names each convention's set
of definitions in every run's fingerprint, so a run folder never mixes results of two.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from logan import plugins
from logan.errors import LoganError, did_you_mean, unknown
from logan.metrics.pair import TokenPair

log = logging.getLogger(__name__)

TokenMetric = Callable[[TokenPair], torch.Tensor]

NEEDS = ("noise", "clean", "augment")
AGGREGATES = ("max_k", "min_k", "max_k_sum")
MEMBER_WHEN = ("low", "high")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]*")  # a plain word in Hydra's lists; "_..." names are the engine's
TKN_SUFFIX = "_tkn_vals"  # <metric>_tkn_vals: its per-token values in img_metrics.get_proc_meta_metrics

_FAMILIES = ("logan.metrics.logan", "logan.metrics.vlmia", "logan.metrics.original")
COMPAT = ("logan", "original")
# bump a convention's entry whenever one of its definitions (a formula, a floor, a slicing) changes
DEFINITIONS = {"logan": "logan-2", "original": "original-225fb67c-1"}
_METRICS: dict[str, MetricSpec] = {}  # LOGAN's definitions
_OVERRIDES: dict[str, dict[str, MetricSpec]] = {"original": {}}  # a convention's own, where it differs
_PLUGIN_FAILURES: list[str] = []  # one error line per metric plugin family that failed to import
_plugins_loaded = False
_loading: str | None = None  # the origin of the plugin family being imported


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: TokenMetric
    needs: str = "noise"
    aggregate: str = "max_k"
    member_when: str = "low"
    description: str = ""
    origin: str = plugins.BUILT_IN  # "built-in", a plugin's "distribution version", or "module NAME"

    @property
    def sign(self) -> float:
        """score = sign * value, so that a higher score means "more likely member"."""
        return -1.0 if self.member_when == "low" else 1.0

    @property
    def orientation(self) -> str:
        return f"{self.member_when} = member (score = {'-' if self.member_when == 'low' else '+'}value)"


def register_metric(
    name: str,
    *,
    needs: str = "noise",
    aggregate: str = "max_k",
    member_when: str = "low",
    description: str | None = None,
    compat: str = "logan",
) -> Callable[[TokenMetric], TokenMetric]:
    """Decorator: register a per-token metric under `name` (`compat`: the convention whose definition it
    is; "original" for a metric the original code defines otherwise); bad settings raise LoganError here."""
    where = f"register_metric({name!r})"
    if not isinstance(name, str) or not NAME.fullmatch(name) or name.endswith(TKN_SUFFIX):
        raise LoganError(
            f"{where}: a metric name is a letter followed by letters, digits or _ . + - "
            f"and does not end in {TKN_SUFFIX}."
        )
    for key, value, allowed in (
        ("needs", needs, NEEDS),
        ("aggregate", aggregate, AGGREGATES),
        ("member_when", member_when, MEMBER_WHEN),
        ("compat", compat, COMPAT),
    ):
        if value not in allowed:
            raise LoganError(
                f"{where}: {key}={value!r} is not one the engine provides;"
                f"{did_you_mean(str(value), allowed)} Use one of {', '.join(allowed)}."
            )
    if description is not None and (not isinstance(description, str) or "\n" in description.strip()):
        raise LoganError(f"{where}: description= is one line of text.")

    def wrap(fn: TokenMetric) -> TokenMetric:
        _check_function(where, needs, fn)
        module = getattr(fn, "__module__", None) or "?"
        origin = plugins.BUILT_IN if module.startswith("logan.") else _loading or f"module {module}"
        text = plugins.summary(fn) if description is None else description.strip()
        spec = MetricSpec(name, fn, needs, aggregate, member_when, text, origin)
        if compat == "logan":
            _add(spec)
        else:
            _OVERRIDES[compat][name] = spec
        return fn

    return wrap


def _check_function(where: str, needs: str, fn: object) -> None:
    """The engine calls fn(pair) on [N, V] float32 logits and stacks the [N] results: check that now."""
    if not callable(fn):
        raise LoganError(f"{where}: decorates {fn!r}, which is not a function of a TokenPair.")
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        called = f"{getattr(fn, '__name__', fn)}{inspect.signature(fn)}"
        raise LoganError(f"{where}: {called} must take exactly one argument, the TokenPair.") from None
    except ValueError:
        pass  # no introspectable signature (a builtin): the trial call below checks it
    rows, pair = _trial_pair(needs)
    try:
        with torch.no_grad():
            out = fn(pair)
    except Exception as exc:  # any failure here is the metric's; the user needs it named now
        hint = ""
        if needs == "clean":
            hint = " (a needs='clean' metric gets no noisy logits: pair.noisy is None)"
        raise LoganError(
            f"{where}: fails on a trial TokenPair with needs={needs!r}{hint}: {plugins.one_line(exc)}."
        ) from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (rows,) or out.is_complex():
        got = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise LoganError(
            f"{where}: returns {got} for {rows} token rows; a metric returns one real value per "
            "token (a tensor of shape [N])."
        )


def _trial_pair(needs: str) -> tuple[int, TokenPair]:
    """A small pair as the engine builds it for `needs` (seeded: the global RNG is left alone)."""
    rows, vocab = 3, 11
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(rows, vocab, generator=gen)
    other = None if needs == "clean" else clean + 0.5 * torch.randn(rows, vocab, generator=gen)
    return rows, TokenPair(clean, other, torch.randint(0, vocab, (rows,), generator=gen))


def _add(spec: MetricSpec) -> None:
    """Register `spec`; when two origins give one name, a built-in wins, else the first (with a warning)."""
    old = _METRICS.get(spec.name)
    if old is not None and old.origin != spec.origin:
        if spec.origin != plugins.BUILT_IN:
            kind = "a built-in metric" if old.origin == plugins.BUILT_IN else f"the metric of {old.origin}"
            log.warning("ignoring metric '%s' of %s: %s has that name", spec.name, spec.origin, kind)
            return
        log.warning(
            "metric '%s' of %s is replaced by the built-in metric of that name", spec.name, old.origin
        )
    _METRICS[spec.name] = spec


def _load_plugins() -> None:
    """Import every `logan.metrics` plugin family once; one that fails is left out with a warning."""
    global _plugins_loaded, _loading
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for plugin in plugins.find(plugins.METRICS):
        before = set(_METRICS)
        _loading = plugin.origin
        try:
            plugin.load()
        except LoganError as exc:
            for name in set(_METRICS) - before:  # nothing half-registered
                del _METRICS[name]
            _PLUGIN_FAILURES.append(str(exc))
            log.warning("%s", exc)
        finally:
            _loading = None


def all_metrics(compat: str = "logan") -> dict[str, MetricSpec]:
    """Every registered metric as the convention `compat` defines it: the built-in families, then the
    installed plugin families."""
    for module in _FAMILIES:
        importlib.import_module(module)
    _load_plugins()
    return {**_METRICS, **_OVERRIDES.get(compat, {})}


def get_metric(name: str, kind: str = "metric", *, compat: str = "logan") -> MetricSpec:
    """The metric registered as `name`, by the convention `compat`; an unknown name is a LoganError (`kind`
    says where it was given) that also names any metric plugin that failed to import."""
    metrics = all_metrics(compat)
    if name not in metrics:
        error = unknown(kind, name, metrics)
        if _PLUGIN_FAILURES:  # the name may belong to a plugin that did not load: say so
            raise LoganError(f"{error} {' '.join(_PLUGIN_FAILURES)}")
        raise error
    return metrics[name]
