"""Trains a CoDA-Net from a config: ``python train.py [--config configs/X.py[:arg]] [--workdir DIR]``.

With no argument it trains the embedded default (digits) on the local devices.
Re-running the same command in the same work directory resumes. Multi-host
(TPU pods, clusters): add ``--multihost`` on every host (see README).
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))

config_flags.DEFINE_config_file(
    "config", os.path.join(_HERE, "configs", "digits.py"),
    "Training config file (configs/*.py), optionally with ':arg'.", lock_config=True)
flags.DEFINE_string("workdir", None, "Work directory (default: runs/<config.name>).")
flags.DEFINE_bool("multihost", bool(os.environ.get("JAX_COORDINATOR_ADDRESS")),
                  "Join a multi-host run via jax.distributed.initialize.")
flags.DEFINE_string("coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS"),
                    "host:port of process 0 (auto-detected on TPU pods and SLURM).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.DEFINE_integer("init_timeout", 120, "Seconds to wait for every process to join.")
FLAGS = flags.FLAGS


def _env_or_flag(flag_value, name):
  value = os.environ.get(name)
  return flag_value if flag_value is not None else (int(value) if value else None)


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  if FLAGS.multihost:
    from codajax.train.parallel import initialize_distributed

    initialize_distributed(
        FLAGS.coordinator_address,
        _env_or_flag(FLAGS.num_processes, "JAX_NUM_PROCESSES"),
        _env_or_flag(FLAGS.process_id, "JAX_PROCESS_ID"),
        FLAGS.init_timeout)

  from codajax.train import train_and_evaluate

  config = FLAGS.config
  workdir = FLAGS.workdir or os.path.join("runs", config.name)
  metrics = train_and_evaluate(config, workdir)
  if "eval/accuracy" in metrics:
    import jax

    if jax.process_index() == 0:
      print(f"done: step {metrics['step']}, eval accuracy {metrics['eval/accuracy']:.4f}; "
            f"work directory {os.path.abspath(workdir)}")


if __name__ == "__main__":
  app.run(main)
