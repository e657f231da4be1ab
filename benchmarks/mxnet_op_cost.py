"""The floor under any MXNet graph loop: what one operator of a bound executor costs at tiny sizes.

Issue 16 asks for the Gaussian GAN at 100x the d2l loop. MXNet 1.9.1 has no symbolic gradient, so
a multi-step graph (one executor over k unrolled iterations, or ``contrib.foreach``) would have to
carry a hand-derived backward: about 100 operators an iteration (D's forward on both batches, the
BCE gradient, D's backward, G's forward and backward through D, Adam on flat vectors). This probe
times a bound executor (``Symbol.bind``, no autograd, no Python per operator) over a chain of
small ``FullyConnected`` and ``tanh`` operators, at the Gaussian GAN's sizes (8 rows, 5 columns),
so the README can say what such a loop would cost at best.

    python -m gansuite.benchmarks.mxnet_op_cost            # in the mxnet env (tox's cmp-mxnet or mxnet)
"""

from __future__ import annotations

import argparse
import json
import os

from .timing import Budget, measure


def executor_op_cost(operators: int = 200, rows: int = 8, width: int = 5,
                     budget: Budget | None = None) -> dict[str, float | int | str]:
    """Seconds per operator of one bound executor's forward over ``operators`` chained operators,
    steady state (warm-up excluded; ``wait_to_read`` before every clock read)."""
    import mxnet as mx

    if operators < 2:
        raise ValueError(f"operators: must be at least 2, got {operators!r}")
    x = mx.sym.var("x")
    y, args = x, {"x": mx.nd.ones((rows, width))}
    for i in range(operators):
        if i % 2:
            y = mx.sym.tanh(y)
        else:
            args[f"w{i}"] = mx.nd.ones((width, width)) * 0.1
            y = mx.sym.FullyConnected(y, weight=mx.sym.var(f"w{i}"), num_hidden=width, no_bias=True, flatten=False)
    executor = y.bind(mx.cpu(), args, grad_req="null")

    def run(n: int) -> None:
        for _ in range(n):
            executor.forward(is_train=False)

    timing = measure(run, lambda: executor.outputs[0].wait_to_read(), budget or Budget())
    return {"operators": operators, "rows": rows, "width": width, "forward_s": timing.median_s,
            "per_operator_s": timing.median_s / operators, "engine": os.environ.get("MXNET_ENGINE_TYPE", "ThreadedEnginePerDevice"),
            "mxnet": mx.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operators", type=int, default=200)
    print(json.dumps(executor_op_cost(parser.parse_args().operators), indent=1))


if __name__ == "__main__":
    main()
