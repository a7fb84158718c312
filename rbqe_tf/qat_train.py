"""Quantization-aware fine-tuning: a float RBQE → fake-quantized tf-keras model, trained by
the one training definition (:mod:`rbqe_tf.training`: same patches, loss, schedule,
checkpoints) with this driver's step.

Checkpoints hold the quantized model (quantizer ranges included) and the optimizer; the
model is rebuilt from the config, so restoring needs no serialized tf-keras layers. When
the run is done, ``final.keras`` holds the fine-tuned float weights as a Keras 3 RBQE
(what ``rbqe_tf.evaluate`` or PTQ export can read); :mod:`rbqe_tf.qat_checkpoint` reads a
run back. Import only in a QAT process (this imports tensorflow-model-optimization; see
:mod:`rbqe_tf.qat_model`).
"""

import tensorflow as tf

from rbqe_tf import data
from rbqe_tf.model import RBQE, load_model
from rbqe_tf.training import Training

from rbqe_tf import qat_model  # noqa: E402  (after Keras 3 imports: sets TF_USE_LEGACY_KERAS)
from rbqe_tf.loss import weighted_loss  # noqa: E402
import tf_keras  # noqa: E402

CALIBRATION_BATCHES = 4


class QATDriver:
    """What :meth:`rbqe_tf.training.Training.run` needs, on the fake-quantized twin of
    ``cfg.init`` (activation ranges calibrated on batches of another seed's stream, so
    that step n always trains on batch n)."""

    def __init__(self, cfg, sampler):
        self.cfg, self.sampler = cfg, sampler
        self.float_model = load_model(cfg.init)
        self.rbqe_config = self.float_model.rbqe_config
        twin = qat_model.build_twin(self.rbqe_config)
        qat_model.copy_weights(self.float_model, twin)
        self.qat = qat_model.quantize(twin)
        self.optimizer = tf_keras.optimizers.Adam(cfg.lr)
        self.optimizer.build(self.qat.trainable_variables)
        calibration = sampler.reseeded(cfg.seed + 1)
        self.calibrated = qat_model.calibrate(
            self.qat, [calibration(n)[0] for n in range(CALIBRATION_BATCHES)])
        self.groups = {"model": self.qat.weights, "optimizer": self.optimizer.variables}
        self.eval_model = None  # no validation: rbqe_tf.qat has no --val
        self._step = tf.function(self._train_step, autograph=False)

    def batches(self, start):
        return data.batches(self.sampler, start, self.cfg.workers)

    def _loss(self, batch, training):
        compressed, target, weights = batch
        per_sample, mse = weighted_loss(self.qat(compressed, training=training), target,
                                        weights, compressed, self.cfg.relative_eps)
        return tf.reduce_mean(per_sample), tf.reduce_mean(mse, 0)

    def _train_step(self, compressed, target, weights):
        variables = self.qat.trainable_variables
        with tf.GradientTape() as tape:
            loss, mse = self._loss((compressed, target, weights), training=True)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss, mse

    def step(self, batch, lr):
        self.optimizer.learning_rate.assign(lr)
        loss, mse = self._step(*batch)
        return float(loss), mse.numpy(), True

    def evaluate_loss(self, batch):
        """Weighted loss of the fake-quantized model (inference mode) on one batch."""
        return float(self._loss(batch, training=False)[0])

    def final_model(self):
        float_model = RBQE.from_config(self.float_model.get_config())
        qat_model.copy_weights(self.qat, float_model)
        return float_model

    def log(self, step, meter, lr, skipped):
        """The progress bar is the log."""

    def log_validation(self, rows, step):
        """Never called: no validation."""


def train(cfg, argv=()):
    """Fine-tunes ``cfg.init`` with fake quantization → (exit status, driver)."""
    training = Training(cfg, argv)
    driver = QATDriver(cfg, training.sampler)
    status = training.run(driver, rbqe_config=driver.rbqe_config.to_dict(),
                          tensorflow=tf.__version__)
    return status, driver
