"""An installed model for the tests: a module and the dist-info of a distribution that declares it
in group fmmodel.models, as ``pip install`` of a package with that entry point leaves them.

``plugin_env`` is the environment (``PYTHONPATH``) of processes that see it installed; this test
process never does.
"""
from __future__ import annotations

import os
import textwrap

import pytest

PLUGIN = textwrap.dedent('''
    from torch import nn
    from fmmodel.model.user_models import ModelFactory

    class Pool(nn.Module):
        def __init__(self, data):
            super().__init__()
            self.head = nn.Linear(3, data.num_classes)
        def forward(self, video=None, current=None):
            return self.head(current.mean(dim=1))

    pooled_current = ModelFactory(build=Pool, modality="current", task="cls", summary="mean current, linear")
''')


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a process in which the distribution fmf-plugin-demo 1.2.3 is installed."""
    site = tmp_path_factory.mktemp("site")
    (site / "fmf_plugin_demo.py").write_text(PLUGIN)
    info = site / "fmf_plugin_demo-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fmf-plugin-demo\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[fmmodel.models]\npooled_current = fmf_plugin_demo:pooled_current\n")
    return {**os.environ, "PYTHONPATH": str(site)}
