"""The backend-neutral training driver: Keras 3 ``train_on_batch`` under any backend, for
accelerators that have JAX or PyTorch but no TensorFlow (``KERAS_BACKEND=jax python -m
rbqe_tf.train --driver keras …``). Same data, loss, schedule, checkpoints and validation
as the TensorFlow driver; it runs on one device and has no skip of non-finite steps.

``--mixed_bfloat16`` computes in bfloat16 with float32 variables and float32 exit layers
(the residual adds); checkpoints and the saved model are float32.
"""
import keras
from keras import ops

from rbqe_tf import data
from rbqe_tf.loss import weighted_loss
from rbqe_tf.training import Training, initial_model


class ExitLoss(keras.Model):
    """``net``'s exits trained with the project's loss (:func:`rbqe_tf.loss.weighted_loss`)
    through ``compute_loss``, which every backend's ``train_step`` calls; ``y`` is
    ``(target, exit weights)``."""

    def __init__(self, net, relative_eps=0.0):
        super().__init__()
        self.net, self.relative_eps = net, relative_eps

    def call(self, x, training=False):
        return self.net(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        target, weights = y
        loss, _ = weighted_loss(y_pred, target, weights, x, self.relative_eps)
        return ops.mean(loss)


def mixed_precision_copy(model):
    """A copy of ``model`` computing in bfloat16 (variables and exit layers float32)."""
    exits = {f"exit_{k}" for k in range(1, len(model.outputs) + 1)}

    def copy_layer(layer):
        dtype = "float32" if layer.name in exits else "mixed_bfloat16"
        return layer.__class__.from_config({**layer.get_config(), "dtype": dtype})

    copy = keras.models.clone_model(model, clone_function=copy_layer)
    copy.set_weights(model.get_weights())
    for mine, theirs in zip(copy.layers, model.layers):
        mine.trainable = theirs.trainable
    return copy


class KerasDriver:
    """What :meth:`rbqe_tf.training.Training.run` needs, with ``train_on_batch``."""

    def __init__(self, cfg, sampler):
        self.cfg, self.sampler = cfg, sampler
        self.model = initial_model(cfg)
        self.net = mixed_precision_copy(self.model) if cfg.mixed_bfloat16 else self.model
        self.trainer = ExitLoss(self.net, cfg.relative_eps)
        self.trainer.compile(optimizer=keras.optimizers.Adam(
            cfg.lr, global_clipnorm=cfg.clip_norm or None))
        self.trainer.optimizer.build(self.trainer.trainable_variables)
        self.groups = {"model": self.net.weights, "optimizer": self.trainer.optimizer.variables}
        self.eval_model = self.net

    def batches(self, start):
        for x, y, w in data.batches(self.sampler, start, self.cfg.workers):
            yield x, (y, w)

    def step(self, batch, lr):
        self.trainer.optimizer.learning_rate = lr
        x, y = batch
        return float(self.trainer.train_on_batch(x, y)), None, True

    def final_model(self):
        if self.net is not self.model:
            self.model.set_weights(self.net.get_weights())
        return self.model

    def log(self, step, meter, lr, skipped):
        """No TensorBoard under every backend: the progress bar and config.json suffice."""

    def log_validation(self, rows, step):
        """Validation goes to val_history.jsonl (:class:`rbqe_tf.training.Training`)."""


def train(cfg, argv=()):
    """Trains ``cfg`` with the Keras driver → exit status."""
    training = Training(cfg, argv)
    return training.run(KerasDriver(cfg, training.sampler))
