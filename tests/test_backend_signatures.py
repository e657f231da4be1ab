"""Every backend file defines the same public names, with the same parameters, in the same order.

A porting student diffs ``backends/torch/train.py`` against ``backends/jax/train.py``; this test
keeps those diffs down to framework differences. It reads the sources with ``ast`` (no framework
is imported), so it runs in every env, ``core`` included.

Compared per file: the public top-level functions (name and parameter names, in order) and the
public top-level constants, in order of definition. Classes are framework types (a corrected
BatchNorm, an Adam subclass, the state record) and differ by design, except the ``Backend``
subclass in ``backend.py``, whose methods are the template's primitives (common/protocol.py) and
are compared like functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "jax", "tensorflow", "mxnet")
FILES = ("layout.py", "models.py", "train.py", "backend.py", "traps.py", "vae.py")
#: Public names one framework has and the others do not, each with its reason. Nothing else may differ.
FRAMEWORK_EXTRAS = {
    ("jax", "backend.py", "train_epoch"): "lax.scan over a stack of batches: many iterations in one compiled call",
    ("tensorflow", "backend.py", "train_epoch"): "a tf.while_loop over a stack of batches in one tf.function",
    ("torch", "backend.py", "train_epoch"): "torch.compile over torch's scan operator: dense nets' iterations in one call",
    ("torch", "backend.py", "train_epoch_refusal"): "which models that compiled scan takes (dense nets, fast mode)",
    ("mxnet", "backend.py", "train_epoch"): "unrolled iterations in bound executors, their backward written out (epoch.py)",
    ("mxnet", "backend.py", "train_epoch_refusal"): "which models those executors take (dense nets, BCE on logits, fast mode)",
}


def _params(fn: ast.FunctionDef) -> tuple[str, ...]:
    a = fn.args
    return tuple(p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs])


def public_api(path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(kind, name, parameters) of every public top-level definition, in source order."""
    out: list[tuple[str, str, tuple[str, ...]]] = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            out.append(("def", node.name, _params(node)))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out += [("const", t.id, ()) for t in targets if isinstance(t, ast.Name) and not t.id.startswith("_")]
        elif isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "Backend" for b in node.bases):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    out.append(("method", item.name, _params(item)))
                elif isinstance(item, ast.Assign):
                    out += [("attr", t.id, ()) for t in item.targets if isinstance(t, ast.Name)]
    return out


@pytest.mark.parametrize("filename", FILES)
def test_same_public_api_in_every_backend(filename):
    apis = {b: [entry for entry in public_api(ROOT / "backends" / b / filename)
                if (b, filename, entry[1]) not in FRAMEWORK_EXTRAS] for b in BACKENDS}
    reference = apis["torch"]
    assert reference, f"backends/torch/{filename} defines nothing public"
    for backend, api in apis.items():
        assert api == reference, (
            f"backends/{backend}/{filename} differs from backends/torch/{filename}:\n"
            f"  torch: {reference}\n  {backend}: {api}")


def test_backend_subclass_defines_the_template_primitives_in_order():
    """backend.py implements exactly the primitives the template declares abstract, in its order."""
    tree = ast.parse((ROOT / "common" / "protocol.py").read_text())
    template = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Backend")
    abstract = [f.name for f in template.body if isinstance(f, ast.FunctionDef)
                and any(getattr(d, "attr", None) == "abstractmethod" for d in f.decorator_list)]
    methods = [name for kind, name, _ in public_api(ROOT / "backends" / "torch" / "backend.py") if kind == "method"]
    assert [m for m in methods if m in abstract] == abstract
