import pytest

from flipq.host.bitplan import BitPlan, BitPlanError, LayerBits


def test_toml_round_trip(tmp_path):
    plan = BitPlan((LayerBits("conv1", 4, 8), LayerBits("fc1", 3, 4, group_size=8, group_bits=(3, 4, 3)),
                    LayerBits("fc2", 6, 3)), meta={"source": "test"})
    path = plan.save(tmp_path / "plan.toml")
    assert BitPlan.load(path) == plan
    assert BitPlan.load(plan.save(tmp_path / "plan.json")) == plan
    assert plan["fc1"].max_weight_bits == 4
    assert plan.distinct_bit_widths() == {3, 4, 6, 8}


@pytest.mark.parametrize("field,value", [("weight_bits", 1), ("weight_bits", 9), ("act_bits", 0),
                                         ("act_bits", 12)])
def test_bits_outside_range_name_layer_and_value(tmp_path, field, value):
    entry = {"weight_bits": 4, "act_bits": 4, field: value}
    with pytest.raises(BitPlanError, match=rf"layer 'fc1': {field}={value} is outside 2..8"):
        BitPlan.from_dict({"layers": {"conv1": {"weight_bits": 4, "act_bits": 4}, "fc1": entry}})


def test_group_bits_outside_range():
    with pytest.raises(BitPlanError, match=r"layer 'fc1': group_bits holds 9"):
        LayerBits("fc1", 4, 4, group_size=4, group_bits=(4, 9))


def test_unknown_key_and_missing_key():
    with pytest.raises(BitPlanError, match=r"layer 'fc1' has unknown key\(s\) \['wbits'\]"):
        BitPlan.from_dict({"layers": {"fc1": {"weight_bits": 4, "act_bits": 4, "wbits": 3}}})
    with pytest.raises(BitPlanError, match=r"layer 'fc1' lacks act_bits"):
        BitPlan.from_dict({"layers": {"fc1": {"weight_bits": 4}}})


def test_names_checked_against_model():
    plan = BitPlan.uniform(["conv1", "fc1", "fc9"], 4, 4)
    with pytest.raises(BitPlanError, match=r"plan names layer 'fc9', which the model does not have"):
        plan.check_names(["conv1", "fc1", "fc2"])
    with pytest.raises(BitPlanError, match=r"the model's layer 'fc2' has no entry"):
        BitPlan.uniform(["conv1", "fc1"], 4, 4).check_names(["conv1", "fc1", "fc2"])
    with pytest.raises(BitPlanError, match=r"layer 'nope' is not in the plan"):
        plan["nope"]


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.toml"):
        BitPlan.load(tmp_path / "nothere.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[layers.fc1\nweight_bits = 4")
    with pytest.raises(BitPlanError, match="bad.toml"):
        BitPlan.load(bad)


def test_model_rejects_plan_with_wrong_names():
    from flipq.quant.models import build_model

    with pytest.raises(BitPlanError, match="fc7"):
        build_model("digits-cnn", (1, 8, 8), BitPlan.uniform(["conv1", "fc1", "fc7"], 4, 4), 10)


def test_lowering_rejects_plan_that_does_not_match_model(tiny_chain):
    from flipq.hls.lower import lower_qonnx

    wrong_w = tiny_chain.plan.with_layer("fc1", weight_bits=5)
    with pytest.raises(BitPlanError, match=r"layer 'fc1': plan says weight_bits=5, the model's weights have 3"):
        lower_qonnx(tiny_chain.prepared, wrong_w)
    wrong_a = tiny_chain.plan.with_layer("fc2", act_bits=7)
    with pytest.raises(BitPlanError, match=r"layer 'fc2': plan says act_bits=7, the model feeds it 2-bit"):
        lower_qonnx(tiny_chain.prepared, wrong_a)
    short = BitPlan(tiny_chain.plan.layers[:2])
    with pytest.raises(BitPlanError, match="plan has 2 layers"):
        lower_qonnx(tiny_chain.prepared, short)


def test_lowering_checks_group_bits(tiny_chain):
    from flipq.hls.lower import lower_qonnx

    fc2 = tiny_chain.intmodel.mac_layers[-1]
    k, n = fc2.weight.shape
    # fc2 is stored at 6 bits: declared as a 5-bit base with one 6-bit group, the other groups'
    # weights still use their LSB plane
    bits = tiny_chain.plan["fc2"].weight_bits
    too_narrow = tiny_chain.plan.with_layer("fc2", weight_bits=bits - 1, group_size=4,
                                            group_bits=(bits,) + (bits - 1,) * (n * (k // 4) - 1))
    with pytest.raises(BitPlanError, match=rf"layer 'fc2': group \(output \d+, group \d+\) is declared {bits - 1} bits"):
        lower_qonnx(tiny_chain.prepared, too_narrow)
    wrong_count = tiny_chain.plan.with_layer("fc2", group_size=4, group_bits=(6, 6))
    with pytest.raises(BitPlanError, match="group_bits has 2 entries"):
        lower_qonnx(tiny_chain.prepared, wrong_count)


def _plan_toml(tmp_path, fc1_extra: str):
    path = tmp_path / "plan.toml"
    path.write_text(f"[layers.fc1]\nweight_bits = 3\nact_bits = 4\n{fc1_extra}\n")
    return path


@pytest.mark.parametrize("extra,message", [
    ("group_size = true", r"layer 'fc1': group_size=True must be an int >= 0"),
    ("group_size = 4\ngroup_bits = 5", r"layer 'fc1': group_bits = 5 must be a list of widths, one per group"),
    ("group_size = 4\ngroup_bits = [3, true]", r"layer 'fc1': group_bits holds True, outside 2..8"),
    ("group_size = 4\ngroup_bits = []", r"layer 'fc1': group_bits is empty"),
    ("group_size = 4\ngroup_bits = [3, 5]", r"layer 'fc1': group_bits holds 5, but a group is weight_bits \(3\) "
                                            r"or one extra bit \(4\) wide"),
    ("group_size = 4\ngroup_bits = [2, 3]", r"group_bits holds 2, but a group is weight_bits \(3\)"),
])
def test_malformed_group_fields_are_refused_when_read(tmp_path, extra, message):
    path = _plan_toml(tmp_path, extra)
    with pytest.raises(BitPlanError, match=message) as e:
        BitPlan.load(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field", ["weight_bits", "act_bits"])
def test_bool_widths_are_refused(field):
    entry = {"weight_bits": 4, "act_bits": 4, field: True}
    with pytest.raises(BitPlanError, match=rf"layer 'fc1': {field}=True is outside 2..8"):
        BitPlan.from_dict({"layers": {"fc1": entry}})


def test_group_counts_are_checked_against_layer_shapes():
    plan = BitPlan((LayerBits("conv1", 4, 8), LayerBits("fc1", 3, 4, group_size=8, group_bits=(3, 4) * 6)))
    plan.check_shapes({"conv1": (27, 8), "fc1": (20, 4)})  # fc1: ceil(20 / 8) = 3 groups x 4 outputs
    with pytest.raises(BitPlanError, match=r"layer 'fc1': group_bits has 12 entries, the layer has "
                                           r"4 outputs x 2 groups of 8 = 8"):
        plan.check_shapes({"conv1": (27, 8), "fc1": (16, 4)})
    whole = BitPlan((LayerBits("fc1", 3, 4, group_size=0, group_bits=(3, 4, 4)),))
    whole.check_shapes({"fc1": (50, 3)})  # group_size 0: one group per output column
    with pytest.raises(BitPlanError, match=r"4 outputs x 1 groups of 50 = 4"):
        whole.check_shapes({"fc1": (50, 4)})
    with pytest.raises(BitPlanError, match=r"plan names layer 'conv1', which the model does not have"):
        plan.check_shapes({"fc1": (20, 4)})


def test_meta_that_is_not_a_table_is_refused():
    with pytest.raises(BitPlanError, match=r"plan: meta = 5 must be a table"):
        BitPlan.from_dict({"meta": 5, "layers": {"fc1": {"weight_bits": 4, "act_bits": 4}}})
