"""The sandbox's three layers: imports point one way (world ← dapp ← control) and nothing stacks."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import drgreen_poller.sandbox as sandbox
from drgreen_poller.sandbox import SandboxState

PACKAGE = "drgreen_poller.sandbox"
ROOT = Path(sandbox.__file__).parent
# What each layer may import from the project, besides itself.
ALLOWED: dict[str, tuple[str, ...]] = {
    "world": ("drgreen_poller.clock", "drgreen_poller.errors", "drgreen_poller.request_signing"),
    "dapp": (f"{PACKAGE}.world", "drgreen_poller.canonical", "drgreen_poller.request_signing"),
    "control": (f"{PACKAGE}.world", f"{PACKAGE}.dapp"),
}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, by its absolute name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


def _layer_files(layer: str) -> list[Path]:
    return sorted((ROOT / layer).glob("*.py"))


def _project_classes() -> list[type]:
    found = []
    for info in pkgutil.walk_packages(sandbox.__path__, f"{PACKAGE}."):
        module = importlib.import_module(info.name)
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if c.__module__ == info.name]  # fmt: skip
    return found


class TestLayers:
    """The dependency rule between ``world/``, ``dapp/`` and ``control/``."""

    @pytest.mark.parametrize("layer", sorted(ALLOWED))
    def test_a_layer_imports_only_what_it_may(self, layer: str) -> None:
        """A layer's modules import the project only from itself and the layers below it."""
        own = f"{PACKAGE}.{layer}"
        for path in _layer_files(layer):
            for name in _imports(path):
                if not name.startswith("drgreen_poller") or name.startswith(own):
                    continue
                assert name.startswith(ALLOWED[layer]), f"{path.name} imports {name}"

    def test_the_world_is_pure(self) -> None:
        """No module of ``world/`` imports aiohttp or multidict."""
        for path in _layer_files("world"):
            assert not {n for n in _imports(path) if n.split(".")[0] in ("aiohttp", "multidict")}

    def test_no_class_stacks_more_than_two_project_classes(self) -> None:
        """Every sandbox class inherits through at most one other class of the project."""
        for cls in _project_classes():
            ours = [c for c in cls.__mro__ if c.__module__.startswith("drgreen_poller")]
            assert len(ours) <= 2, f"{cls.__qualname__}: {[c.__name__ for c in ours]}"

    def test_the_state_exposes_its_parts_not_their_methods(self) -> None:
        """``SandboxState`` keeps whole-world operations; entity rules sit on its parts."""
        state = SandboxState()
        public = {n for n, v in inspect.getmembers(SandboxState) if callable(v) and n[0] != "_"}
        assert public == {
            "create_holder", "holder", "holder_for_key", "now", "reset", "restore_holder_key",
            "revoke_holder_key", "update_settings",
        }  # fmt: skip
        order = state.orders.create(state.create_holder("shop"))
        assert state.lifecycle.approve(order.id).admin_approval == "VERIFIED"
