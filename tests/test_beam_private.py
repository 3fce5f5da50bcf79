"""Every private Beam name the lab's DirectRunner adapter relies on still exists in the installed
Beam: an upgrade that moves one fails here, naming it and why it is used, before any run does."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from txpipe.lab.direct_pubsub import PRIVATE_APIS, PRIVATE_ATTRIBUTES


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name, None)
            if found is None:
                return None
        return found
    return None


@pytest.mark.parametrize(("dotted", "why"), PRIVATE_APIS, ids=[d for d, _ in PRIVATE_APIS])
def test_beam_still_has_each_private_name_the_adapter_uses(dotted, why):
    if dotted.endswith("._transform_to_watermarks"):  # an instance attribute: in its __init__
        owner = _resolve(dotted.rsplit(".", 1)[0])
        assert owner is not None and "self._transform_to_watermarks" in inspect.getsource(
            owner.__init__), f"Beam changed {dotted}, which the local read uses: {why}"
        return
    assert _resolve(dotted) is not None, f"Beam changed {dotted}, which the local read uses: {why}"


@pytest.mark.parametrize(("owner", "attribute", "why"), PRIVATE_ATTRIBUTES,
                         ids=[f"{o.rsplit('.', 1)[1]}.{a}" for o, a, _ in PRIVATE_ATTRIBUTES])
def test_beam_still_sets_each_private_attribute_the_adapter_reads(owner, attribute, why):
    cls = _resolve(owner)
    assert cls is not None, f"Beam changed {owner}, which the local read uses"
    assert re.search(rf"self\.{attribute}\s*(:[^=\n]*)?=", inspect.getsource(cls)), (
        f"Beam no longer sets {owner}.{attribute}, which the local read uses: {why}")


def test_the_scoped_state_patch_still_fits_beams_signature():
    from apache_beam.runners.worker.statesampler import StateSampler

    params = list(inspect.signature(StateSampler.scoped_state).parameters)
    assert params[:5] == ["self", "name_context", "state_name", "io_target",
                          "metrics_container"], f"Beam changed StateSampler.scoped_state: {params}"
