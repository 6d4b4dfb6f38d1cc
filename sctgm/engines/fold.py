"""Rewrite a network's ONNX graph so that its BatchNormalizations disappear into convolutions.

The published networks put BatchNorm *after* ReLU (Keras's conv -> ReLU -> BN), so no BN folds into
the convolution before it, which is the only fold ONNX Runtime (and its int8 quantiser) knows: every
convolution stays wrapped in float work, and an int8 graph pays a quantise/dequantise round trip
per layer around it. A BN is an affine map per channel, ``y = a * r + b``; this module carries that
map forward through the graph (through the global-average pool, the broadcast and the concatenation,
composing with a following BN) until a convolution absorbs it:

    conv(a * r + b) = conv_{W a}(r) + sum W b                 (interior)

At the zero-padded border the two sides differ: the original convolution sees padding of 0 in
``y``, the folded one sees 0 in ``r`` (= ``b`` in ``y``). With ``exact_border=True`` the difference
is added back: a one-channel convolution of the padding's mask (1 outside the image, 0 inside) by
``-sum_c W[:, c] b[c]``, computed from the input's shape in the graph, so any H x W works, at ~1/C
the cost of the layer (tests: the folded graph equals the original within 1e-4, border included).
With ``exact_border=False`` the border band (as wide as each layer's padding) is left approximate
(docs/speed.md measures what that does to the masks).

A BN that directly follows a convolution (the U-Net's conv -> BN -> ReLU) is folded backwards into
it, exactly. An affine map that reaches an operator it cannot pass is written out again as a BN.

Pure numpy + onnx; the graph in and out is an ``onnx.ModelProto``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Operators an affine map per channel passes through unchanged (the pool, its broadcast, shapes).
_PASS_THROUGH = {"Expand", "Identity"}


def _affine_of_bn(node: Any, inits: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of a BatchNormalization in inference mode: y = a * x + b per channel (float64)."""
    eps = next((attr.f for attr in node.attribute if attr.name == "epsilon"), 1e-5)
    scale, bias, mean, var = (inits[k].astype(np.float64) for k in node.input[1:5])
    a = scale / np.sqrt(var + eps)
    return a, bias - mean * a


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def fold_batchnorms(model: Any, *, exact_border: bool = True) -> Any:
    """A copy of ``model`` (onnx.ModelProto) with its BatchNormalization nodes folded into
    convolutions (see the module docstring); same inputs, outputs and function."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    used_inits: dict[str, np.ndarray] = {}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}

    pending: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # tensor -> (a, b): true value = a * stored + b
    rename: dict[str, str] = {}  # a removed BN's output -> the tensor that now stands for it
    new_nodes: list[Any] = []
    masks: dict[tuple[str, tuple[int, ...]], str] = {}
    counter = [0]

    def const(name: str, array: np.ndarray, dtype: Any = np.float32) -> str:
        used_inits[name] = np.ascontiguousarray(array, dtype=dtype)
        return name

    def fresh(stem: str) -> str:
        counter[0] += 1
        return f"fold/{stem}/{counter[0]}"

    def materialise(name: str) -> str:
        """Write a pending affine map back out, as a BN node, before an operator that cannot take it."""
        a, b = pending[name]
        out = fresh("affine")
        c = a.size
        new_nodes.append(helper.make_node(
            "BatchNormalization", [name, const(f"{out}.a", a), const(f"{out}.b", b), const(f"{out}.m", np.zeros(c)),
                                   const(f"{out}.v", np.ones(c))], [out], epsilon=0.0, name=out))
        return out

    def border_mask(src: str, pads: tuple[int, ...]) -> str:
        """(1, 1, H + top + bottom, W + left + right): 1 in the padding of ``src``, 0 over the image."""
        key = (src, pads)
        if key not in masks:
            stem = fresh("border")
            top, left, bottom, right = pads
            new_nodes.extend([
                helper.make_node("Shape", [src], [f"{stem}/hw"], start=2, name=f"{stem}/hw"),
                helper.make_node("Concat", [const(f"{stem}/ones_nc", np.ones(2), np.int64), f"{stem}/hw"],
                                 [f"{stem}/shape"], axis=0, name=f"{stem}/shape"),
                helper.make_node("ConstantOfShape", [f"{stem}/shape"], [f"{stem}/inside"],
                                 value=numpy_helper.from_array(np.ones(1, np.float32)), name=f"{stem}/inside"),
                helper.make_node("Pad", [f"{stem}/inside", const(f"{stem}/pads", [0, 0, top, left, 0, 0, bottom, right],
                                                                 np.int64)],
                                 [f"{stem}/padded"], name=f"{stem}/padded"),
                helper.make_node("Sub", [const(f"{stem}/one", np.ones(1)), f"{stem}/padded"], [f"{stem}/mask"],
                                 name=f"{stem}/mask"),
            ])
            masks[key] = f"{stem}/mask"
        return masks[key]

    def fold_conv(node: Any, src: str) -> None:
        a, b = pending[src]
        w = inits[node.input[1]].astype(np.float64)
        has_bias = len(node.input) > 2 and node.input[2] != ""
        bias = inits[node.input[2]].astype(np.float64) if has_bias else np.zeros(w.shape[0])
        w_b = np.einsum("ockl,c->okl", w, b)  # each tap's contribution of the shift
        stem = fresh(node.name or "conv")
        out = node.output[0]
        pads = tuple(_attr(node, "pads", [0, 0, 0, 0]))
        top, left, bottom, right = pads[0], pads[1], pads[2], pads[3]
        border = exact_border and any(pads) and np.any(w_b != 0)
        conv_out = f"{stem}/interior" if border else out
        attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
        new_nodes.append(helper.make_node(
            "Conv", [src, const(f"{stem}.weight", w * a[None, :, None, None]),
                     const(f"{stem}.bias", bias + w_b.sum((1, 2)))],
            [conv_out], name=node.name, **attrs))
        if border:
            # the padding held 0 in y before the fold and holds b now: take its taps' share back out
            mask = border_mask(src, (top, left, bottom, right))
            dil = [int(d) for d in _attr(node, "dilations", [1, 1])]
            new_nodes.append(helper.make_node(
                "Conv", [mask, const(f"{stem}/border.weight", -w_b[:, None])], [f"{stem}/border"],
                dilations=dil, kernel_shape=list(w.shape[2:]), name=f"{stem}/border"))
            new_nodes.append(helper.make_node("Add", [conv_out, f"{stem}/border"], [out], name=f"{stem}/add"))

    for node in graph.node:
        original_src = node.input[0] if node.input else ""
        inputs = [rename.get(i, i) for i in node.input]
        del node.input[:]
        node.input.extend(inputs)
        op = node.op_type
        src = inputs[0] if inputs else ""
        if op == "BatchNormalization" and all(i in inits for i in inputs[1:5]) \
                and len(consumers.get(original_src, [])) == 1 and original_src not in graph_outputs:
            a, b = _affine_of_bn(node, inits)
            made_by = next((n for n in reversed(new_nodes) if src in n.output), None)
            if src in pending:  # BN after BN (the concatenation's): compose
                a0, b0 = pending[src]
                pending[src] = (a * a0, a * b0 + b)
            elif made_by is not None and made_by.op_type == "Conv" and made_by.input[1] in {**inits, **used_inits}:
                # conv -> BN (the U-Net's order): fold backwards into the convolution, exactly
                w = used_inits.get(made_by.input[1], inits.get(made_by.input[1])).astype(np.float64)
                has_bias = len(made_by.input) > 2 and made_by.input[2] != ""
                bias = (used_inits.get(made_by.input[2], inits.get(made_by.input[2])) if has_bias
                        else np.zeros(w.shape[0]))
                stem = fresh(made_by.name or "conv")
                made_by.input[1] = const(f"{stem}.weight", w * a[:, None, None, None])
                if has_bias:
                    made_by.input[2] = const(f"{stem}.bias", a * bias + b)
                else:
                    made_by.input.append(const(f"{stem}.bias", b))
            else:
                pending[src] = (a, b)
            rename[node.output[0]] = src
            continue
        if op == "Conv" and src in pending and _attr(node, "group", 1) == 1 \
                and all(s == 1 for s in _attr(node, "strides", [1, 1])) and node.input[1] in inits:
            fold_conv(node, src)
            continue
        if op == "ReduceMean" and src in pending and list(_attr(node, "axes", [])) == [2, 3] \
                and _attr(node, "keepdims", 1) == 1:
            pending[node.output[0]] = pending[src]
            new_nodes.append(node)
            continue
        if op in _PASS_THROUGH and src in pending:
            pending[node.output[0]] = pending[src]
            new_nodes.append(node)
            continue
        if op == "Concat" and _attr(node, "axis", 0) == 1 and all(i in pending for i in inputs):
            pending[node.output[0]] = (np.concatenate([pending[i][0] for i in inputs]),
                                       np.concatenate([pending[i][1] for i in inputs]))
            new_nodes.append(node)
            continue
        if op == "Shape":  # reads the shape only; the stored tensor has the same
            new_nodes.append(node)
            continue
        for k, name in enumerate(inputs):
            if name in pending:
                node.input[k] = materialise(name)
        new_nodes.append(node)

    outputs = {rename.get(o.name, o.name): o.name for o in graph.output}
    for stored, name in outputs.items():
        if stored != name:  # a graph output that was a removed BN: write it out under its own name
            src = materialise(stored) if stored in pending else stored
            new_nodes.append(helper.make_node("Identity", [src], [name], name=f"{name}/out"))

    referenced = {i for n in new_nodes for i in n.input}
    kept = {k: v for k, v in inits.items() if k in referenced and k not in used_inits}
    kept.update({k: v for k, v in used_inits.items() if k in referenced})
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(v if v.dtype != np.float64 else v.astype(np.float32), k)
                             for k, v in kept.items())
    onnx.checker.check_model(model)
    return model

