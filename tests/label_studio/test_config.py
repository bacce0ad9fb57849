"""Labeling config generated from taxonomies: structure, escaping, and the real server's verdict."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from annotations.errors import DomainError
from annotations.label_studio.config import (
    label_config,
    parse_label_config,
    split_taxonomy,
    validate_label_config,
)
from annotations.taxonomy import NIH_CLASSES, VINDR_CXR_CLASSES, build_taxonomy, preset

AWKWARD = ["Nodule/Mass", "ILD", 'A & B <c> "quoted"', "Épanchement pleural"]


@pytest.mark.parametrize("name,classes", [("vindr_cxr", VINDR_CXR_CLASSES),
                                          ("nih", NIH_CLASSES)])
def test_preset_configs_have_every_class(name, classes):
    xml = label_config(preset(name))
    found = validate_label_config(xml, preset(name))
    assert list(found.box_classes) == classes
    assert found.image_classes == ("No finding",)
    root = ET.fromstring(xml)
    image = root.find("Image")
    assert image.attrib["name"] == "image" and image.attrib["value"] == "$image"
    assert image.attrib["zoom"] == image.attrib["brightnessControl"] == "true"
    boxes = root.find("RectangleLabels")
    assert (boxes.attrib["name"], boxes.attrib["toName"]) == ("label", "image")
    colors = {lab.attrib["value"]: lab.attrib["background"] for lab in boxes}
    assert colors == {c.name: c.color for c in preset(name) if not c.image_level}
    choices = root.find("Choices")
    assert choices.attrib["name"] == "image_labels" and choices.attrib["choice"] == "multiple"


def test_awkward_names_are_escaped_and_survive():
    taxonomy = build_taxonomy(AWKWARD)
    xml = label_config(taxonomy)
    assert "&amp;" in xml and "&lt;c&gt;" in xml
    assert list(validate_label_config(xml, taxonomy).box_classes) == AWKWARD


def test_taxonomy_without_image_level_classes_has_no_choices():
    taxonomy = build_taxonomy(["ILD"], no_finding=False)
    xml = label_config(taxonomy)
    assert "Choices" not in xml
    assert parse_label_config(xml).image_classes == ()


def test_validator_reports_missing_and_unknown_classes():
    xml = label_config(preset("nih"))
    with pytest.raises(DomainError, match="box classes missing") as err:
        validate_label_config(xml, preset("vindr_cxr"))
    assert err.value.code == "invalid_label_config"
    with pytest.raises(DomainError, match="not in the taxonomy"):
        validate_label_config(label_config(preset("vindr_cxr")), build_taxonomy(["ILD"]))


@pytest.mark.parametrize("xml,message", [
    ("<View><Image", "well-formed"),
    ("<Root/>", "<View>"),
    ('<View><Image name="img" value="$image"/></View>', "Image"),
    ('<View><Image name="image" value="$image"/></View>', "RectangleLabels"),
    ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="x">'
     '<Label value="A"/></RectangleLabels></View>', "toName"),
    ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
     '<Label value="A"/><Label value="A"/></RectangleLabels></View>', "duplicate"),
    ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
     '<Label value=" "/></RectangleLabels></View>', "empty"),
])
def test_validator_rejects_broken_configs(xml, message):
    with pytest.raises(DomainError, match=message):
        parse_label_config(xml)


def test_empty_taxonomy_is_refused():
    with pytest.raises(DomainError):
        label_config(build_taxonomy([], no_finding=True))


@pytest.mark.parametrize("name", ["vindr_cxr", "nih"])
def test_real_server_accepts_preset_configs(ls_client, name):
    xml = label_config(preset(name))
    project_id = ls_client.create_project(f"config {name}", xml)
    parsed = ls_client.get_project(project_id)["parsed_label_config"]
    classes = split_taxonomy(preset(name))
    assert parsed["label"]["labels"] == list(classes.box_classes)
    assert parsed["image_labels"]["labels"] == list(classes.image_classes)


def test_real_server_accepts_awkward_names(ls_client):
    project_id = ls_client.create_project("config awkward", label_config(build_taxonomy(AWKWARD)))
    parsed = ls_client.get_project(project_id)["parsed_label_config"]
    assert parsed["label"]["labels"] == AWKWARD


@pytest.mark.parametrize("xml", [
    label_config(preset("nih")).replace('toName="image"', 'toName="missing"', 1),
    label_config(preset("nih"))[:-10],
])
def test_real_server_rejects_broken_configs(ls_client, xml):
    with pytest.raises(DomainError) as err:
        ls_client.create_project("broken config", xml)
    assert err.value.code == "label_studio_error" and not err.value.transient
    assert err.value.detail["status"] == 400
    assert "label_config" in err.value.detail["body"]["validation_errors"]


@pytest.mark.parametrize("xml", [
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
    "<View>&b;</View>",
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]><View>&x;</View>',
    "<View>" + "<Label value='x'/>" * 40_000 + "</View>",
])
def test_entity_bombs_external_entities_and_huge_configs_are_refused(xml):
    with pytest.raises(DomainError) as err:
        parse_label_config(xml)
    assert err.value.code == "invalid_label_config"
    assert "passwd" not in err.value.message and "root:" not in err.value.message
