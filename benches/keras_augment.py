"""Keras' ImageDataGenerator throughput on the same photos: load at 75x75 (nearest), then the
recipe's random_transform + apply_transform + rescale per image, on one thread; median, min and
max of 5 repetitions. Usage: python keras_augment.py DATA_DIR"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
from keras.utils import load_img, img_to_array
try:
    from keras.preprocessing.image import ImageDataGenerator
except ImportError:
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

root = sys.argv[1]
paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.lower().endswith(".jpg"))
images = [img_to_array(load_img(p, target_size=(75, 75), interpolation="nearest")) for p in paths]
gen = ImageDataGenerator(rescale=1. / 255, rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                         shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")
rates = []
for rep in range(5):
    np.random.seed(rep)
    start = time.perf_counter()
    for x in images:
        t = gen.get_random_transform(x.shape)
        y = gen.standardize(gen.apply_transform(x, t))
    rates.append(len(images) / (time.perf_counter() - start))
rates.sort()
print(f"keras ImageDataGenerator, 75x75, 1 thread, {len(images)} photos x 5: median {rates[2]:.0f} images/s "
      f"(min {rates[0]:.0f}, max {rates[4]:.0f})")
