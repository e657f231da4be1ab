"""JAX backend: Flax linen networks, Optax Adam, one jitted function per iteration."""

import jax

# float64 needs jax_enable_x64: without it JAX silently turns every float64 array into float32
# (jnp.asarray(x, jnp.float64) returns float32, with only a warning). It is a process-wide switch
# and must be set before any JAX array exists, so it is set here, on import, not per build.
# Side effect: untyped defaults become 64-bit (jnp.zeros(3) is float64, jax.random.normal draws
# float64), so every array this backend creates passes its dtype explicitly and float32 states
# stay float32 (tests/test_backend_jax.py checks every leaf).
jax.config.update("jax_enable_x64", True)

from .backend import JaxBackend as Backend  # noqa: E402  (after the x64 switch, on purpose)

__all__ = ["Backend"]
