"""EfficientNet-Lite0 on ONNX Runtime: the reference that `cargo bench --bench backbone` runs
between its own rounds.

The shared anchor (`../shared/anchors/lite0_onnxruntime.py`) exports the network with PyTorch,
which cannot be installed on every machine (its wheels pull gigabytes of CUDA libraries). This
script needs no PyTorch: it reads the same `.pth` file itself (a zip of pickled tensors), folds
each batch norm into its convolution as `torch.onnx.export` does in evaluation mode, and writes
the same graph with the `onnx` package: TensorFlow 'same' padding as explicit (asymmetric) pads,
ReLU6 as Clip, the residual adds, the head, global average pooling. Before timing it checks the
graph against PyTorch's own features in `../shared/golden/efficientnet_lite0` (when given), so a
wrong graph cannot pass for a fast one.

Set-up (once, outside the repository):

    python3 -m venv /tmp/ort-anchor
    /tmp/ort-anchor/bin/pip install onnx onnxruntime numpy

Usage:

    python lite0_onnxruntime.py WEIGHTS.pth --threads 2 --sizes 224,320 --repetitions 3 \
        [--golden DIR] [--batch 32]

Prints one `RESULT {json}` line: ONNX Runtime's version, and per size the median batch-32
images/s and batch-1 milliseconds of the pooled features (inputs already normalised)."""
import argparse, io, json, pickle, sys, time, zipfile
from collections import OrderedDict

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

BN_EPSILON = 1e-3
# (repeats, kernel, stride, expansion, input channels, output channels), as in model/efficientnet.rs
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


def read_pth(path):
    """The tensors of a file written by `torch.save`, as numpy arrays by name: the zip format of
    PyTorch 1.6 and later, or the older one (pickles, then each storage's raw bytes)."""
    dtypes = {"FloatStorage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32}
    storages = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda storage, offset, size, stride, *rest: (storage, offset, size, stride)
            if (module, name) == ("collections", "OrderedDict"):
                return OrderedDict
            if module == "torch" and name.endswith("Storage"):
                return name
            raise pickle.UnpicklingError(f"{path}: unexpected {module}.{name} in the weights")

        def persistent_load(self, pid):
            storages.setdefault(pid[2], dtypes[pid[1]])
            return pid[2]

    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        prefix = archive.namelist()[0].split("/")[0]
        state = Unpickler(io.BytesIO(archive.read(f"{prefix}/data.pkl"))).load()
        data = {key: np.frombuffer(archive.read(f"{prefix}/data/{key}"), dtype)
                for key, dtype in storages.items()}
    else:
        with open(path, "rb") as f:
            for _ in range(3):  # magic number, protocol version, system information
                pickle.load(f)
            state = Unpickler(f).load()
            data = {}
            for key in pickle.load(f):
                count = int(np.frombuffer(f.read(8), np.int64)[0])
                dtype = np.dtype(storages[key])
                data[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)

    def tensor(record):
        key, offset, size, stride = record
        storage = data[key]
        if not size:
            return storage[offset:offset + 1].reshape(())
        return np.lib.stride_tricks.as_strided(
            storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride]).copy()

    return {k.replace("module.", ""): tensor(v) for k, v in state.items()}


def same_pads(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class Graph:
    def __init__(self, weights):
        self.w, self.nodes, self.inits, self.count = weights, [], [], 0

    def name(self, what):
        self.count += 1
        return f"{what}{self.count}"

    def conv_bn(self, x, size, conv, bn, kernel, stride, groups, relu6):
        w = self.w[conv + ".weight"]
        scale = self.w[bn + ".weight"] / np.sqrt(self.w[bn + ".running_var"].astype(np.float64) + BN_EPSILON)
        weight = (w * scale[:, None, None, None]).astype(np.float32)
        bias = (self.w[bn + ".bias"] - self.w[bn + ".running_mean"] * scale).astype(np.float32)
        wn, bn_name = self.name("w"), self.name("b")
        self.inits += [numpy_helper.from_array(weight, wn), numpy_helper.from_array(bias, bn_name)]
        before, after, out = same_pads(size, kernel, stride)
        y = self.name("conv")
        self.nodes.append(helper.make_node("Conv", [x, wn, bn_name], [y], kernel_shape=[kernel, kernel],
                                           strides=[stride, stride], group=groups,
                                           pads=[before, before, after, after]))
        if relu6:
            z = self.name("relu6")
            lo, hi = self.name("lo"), self.name("hi")
            self.inits += [numpy_helper.from_array(np.array(0, np.float32), lo),
                           numpy_helper.from_array(np.array(6, np.float32), hi)]
            self.nodes.append(helper.make_node("Clip", [y, lo, hi], [z]))
            y = z
        return y, out


def build(weights, size):
    g = Graph(weights)
    x, side = g.conv_bn("x", size, "_conv_stem", "_bn0", 3, 2, 1, True)
    index = 0
    for repeats, kernel, stride, expansion, cin, cout in STAGES:
        for r in range(repeats):
            cin_r, stride_r = (cin, stride) if r == 0 else (cout, 1)
            p = f"_blocks.{index}."
            y = x
            if expansion != 1:
                y, _ = g.conv_bn(y, side, p + "_expand_conv", p + "_bn0", 1, 1, 1, True)
            hidden = cin_r * expansion
            y, out = g.conv_bn(y, side, p + "_depthwise_conv", p + "_bn1", kernel, stride_r, hidden, True)
            y, _ = g.conv_bn(y, out, p + "_project_conv", p + "_bn2", 1, 1, 1, False)
            if stride_r == 1 and cin_r == cout:
                z = g.name("add")
                g.nodes.append(helper.make_node("Add", [y, x], [z]))
                y = z
            x, side = y, out
            index += 1
    x, _ = g.conv_bn(x, side, "_conv_head", "_bn1", 1, 1, 1, True)
    g.nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]),
                helper.make_node("Flatten", ["pooled"], ["features"], axis=1)]
    graph = helper.make_graph(
        g.nodes, "efficientnet_lite0_features",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 1280])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def session(model, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def median_time(fn, repetitions):
    fn()
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="224,320")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--golden")
    args = parser.parse_args()
    weights = read_pth(args.weights)
    result = {"onnxruntime": ort.__version__, "threads": args.threads, "sizes": {}}
    if args.golden:
        cases = json.load(open(f"{args.golden}/cases.json"))
        worst = 0.0
        for case in cases if isinstance(cases, list) else cases["cases"]:
            name = case["name"] if isinstance(case, dict) else case
            x = np.load(f"{args.golden}/{name}.input.npy").astype(np.float32)
            expected = np.load(f"{args.golden}/{name}.features.npy")
            got = session(build(weights, x.shape[-1]), args.threads).run(None, {"x": x})[0]
            worst = max(worst, float(np.abs(got - expected.reshape(got.shape)).max()))
        result["golden_max_abs_difference"] = worst
        if worst > 1e-3:
            sys.exit(f"the ONNX graph does not reproduce PyTorch's features (max difference {worst})")
    rng = np.random.default_rng(0)
    for size in [int(s) for s in args.sizes.split(",")]:
        s = session(build(weights, size), args.threads)
        batch = rng.uniform(-1, 1, (args.batch, 3, size, size)).astype(np.float32)
        one = batch[:1].copy()
        b32 = args.batch / median_time(lambda: s.run(None, {"x": batch}), args.repetitions)
        b1 = median_time(lambda: s.run(None, {"x": one}), 5 * args.repetitions) * 1000
        result["sizes"][str(size)] = {"batch_img_s": b32, "b1_ms": b1}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
