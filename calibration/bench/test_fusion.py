"""Fusion patterns: every pattern's unfused form and each fused variant (library kernel,
torch.compile) as separate cases, grouped with their twin; a fused variant whose output
differs from the unfused output fails before it is timed."""

import pytest


@pytest.mark.fusion("linear")
def test_linear_fusion(fusion_case, calibrate):
    calibrate(fusion_case)


@pytest.mark.fusion("conv")
def test_conv_fusion(fusion_case, calibrate):
    calibrate(fusion_case)


@pytest.mark.fusion("attention")
def test_attention_fusion(fusion_case, calibrate):
    calibrate(fusion_case)


@pytest.mark.fusion("elementwise")
def test_elementwise_fusion(fusion_case, calibrate):
    calibrate(fusion_case)
