"""Test-session settings: a persistent XLA compilation cache shared by every test.

Many tests compile the same small programs (train/eval steps of the toy models),
in this process and in the subprocesses they start (which inherit the
environment). A per-session cache directory turns those repeats into cache hits.
"""

import os
import tempfile

_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                               tempfile.mkdtemp(prefix="codajax-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
