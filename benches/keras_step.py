"""The Keras recipe's model timed on random tensors, as `cargo bench --bench speed` times vlinder's:
training step (batch 32, 75x75x3, binary cross-entropy, RMSprop), inference at batch 64 and batch 1.
Prints one JSON line. Run with the anchor's environment (../shared/anchors/README.md)."""
import argparse, json, os, time

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--steps", type=int, default=20)
a = p.parse_args()
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
import keras
from keras import layers

tf.config.threading.set_intra_op_parallelism_threads(a.threads)
tf.config.threading.set_inter_op_parallelism_threads(a.threads)
keras.utils.set_random_seed(1)
model = keras.Sequential([
    keras.Input((75, 75, 3)),
    layers.Conv2D(32, (2, 2), padding="same"), layers.Activation("relu"),
    layers.MaxPooling2D((2, 2), strides=2),
    layers.Conv2D(64, (2, 2), padding="valid"), layers.Activation("relu"),
    layers.MaxPooling2D((2, 2), strides=2),
    layers.Flatten(), layers.Dense(64), layers.Activation("relu"), layers.Dropout(0.25),
    layers.Dense(1), layers.Activation("sigmoid"),
])
model.compile(loss="binary_crossentropy",
              optimizer=keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, epsilon=1e-7))
rng = np.random.default_rng(1)
x = rng.random((32, 75, 75, 3), dtype=np.float32)
y = rng.integers(0, 2, (32, 1)).astype(np.float32)
for _ in range(3):
    model.train_on_batch(x, y)
start = time.perf_counter()
for _ in range(a.steps):
    model.train_on_batch(x, y)
train = 32 * a.steps / (time.perf_counter() - start)

x64 = tf.constant(rng.random((64, 75, 75, 3), dtype=np.float32))
x1 = tf.constant(rng.random((1, 75, 75, 3), dtype=np.float32))
infer = tf.function(lambda t: model(t, training=False))
for _ in range(3):
    infer(x64).numpy(); infer(x1).numpy()
start = time.perf_counter()
for _ in range(10):
    infer(x64).numpy()
batch64 = 640 / (time.perf_counter() - start)
times = []
for _ in range(50):
    s = time.perf_counter()
    infer(x1).numpy()
    times.append(time.perf_counter() - s)
times.sort()
print(json.dumps({"train_images_per_second": train, "batch64_images_per_second": batch64,
                  "batch1_ms": times[len(times) // 2] * 1000}))
