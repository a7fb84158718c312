"""The TensorFlow training driver (the main one): the step runs under ``tf.distribute``
(one device, all local GPUs or CPUs, or a multi-worker cluster), skips and counts steps
whose gradient is not finite, and logs to TensorBoard (``RUN_DIR/tb``)."""
import numpy as np
import tensorflow as tf

from rbqe_tf import data
from rbqe_tf.train_config import ConfigError
from rbqe_tf.train_log import write_train, write_validation
from rbqe_tf.train_step import TrainStep, is_chief, make_strategy
from rbqe_tf.training import Training, initial_model


class TFDriver:
    """What :meth:`rbqe_tf.training.Training.run` needs, on a ``tf.distribute`` strategy."""

    def __init__(self, cfg, strategy, sampler, run_dir, chief):
        if cfg.batch % strategy.num_replicas_in_sync:
            raise ConfigError(f"--batch {cfg.batch} is not divisible by the "
                              f"{strategy.num_replicas_in_sync} replicas")
        self.cfg, self.strategy, self.sampler = cfg, strategy, sampler
        with strategy.scope():
            self.model = initial_model(cfg)
            self.train_step = TrainStep(self.model, strategy, cfg.batch,
                                        clip_norm=cfg.clip_norm or None,
                                        relative_eps=cfg.relative_eps)
        self.groups = {"model": self.model.weights,
                       "optimizer": self.train_step.optimizer.variables}
        self.eval_model = self.model
        self.writer = (tf.summary.create_file_writer(str(run_dir / "tb")) if chief
                       else tf.summary.create_noop_writer())

    def batches(self, start):
        b, p, k = self.cfg.batch, self.cfg.patch, len(self.model.outputs)
        spec = (tf.TensorSpec([b, p, p, 1], tf.float32), tf.TensorSpec([b, p, p, 1], tf.float32),
                tf.TensorSpec([b, k], tf.float32))
        dataset = tf.data.Dataset.from_generator(
            lambda: data.batches(self.sampler, start, self.cfg.workers), output_signature=spec)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        return iter(self.strategy.experimental_distribute_dataset(
            dataset.prefetch(2).with_options(options)))

    def step(self, batch, lr):
        loss, mse, norm = self.train_step.step(batch, lr)
        return float(loss), mse.numpy(), bool(np.isfinite(norm.numpy()))

    def final_model(self):
        return self.model

    def log(self, step, meter, lr, skipped):
        with self.writer.as_default():
            write_train(step, meter, lr, skipped)

    def log_validation(self, rows, step):
        with self.writer.as_default():
            write_validation(rows, step)
        self.writer.flush()


def train(cfg, argv=()):
    """Trains ``cfg`` with the TensorFlow driver → exit status."""
    strategy = make_strategy(cfg.strategy)
    chief = is_chief(strategy)
    training = Training(cfg, argv, chief)
    driver = TFDriver(cfg, strategy, training.sampler, training.run_dir, chief)
    status = training.run(driver, strategy=type(strategy).__name__,
                          replicas=strategy.num_replicas_in_sync, tensorflow=tf.__version__)
    driver.writer.flush()
    return status
