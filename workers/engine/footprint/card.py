"""The model card's water and embodied-impact section. The Hub has no metadata key for either (only
`co2_eq_emissions`), so they are in the card's body, next to the energy section, never in front matter.
"""

from typing import Any

from workers.engine.markdown import number, table


def _payback(payback: dict[str, Any]) -> str:
    text = f"Payback in {payback['unit']}: **{payback['verdict']}**. {payback.get('explanation') or ''}".rstrip()
    return text


def _water(water: dict[str, Any]) -> list[str]:
    if water.get("method") in ("unavailable", "disabled"):
        return [f"Water was not estimated: the job's energy is {water.get('method')}."]
    worker, total = water["worker"], water["total"]
    parts = [
        f"This compression job consumed {number(total['water_l'])} L of water: {number(total['onsite_l'])} L on site "
        f"(WUE {number(worker['wue_l_per_kwh'])} L/kWh; {worker['wue_source']}) and {number(total['offsite_l'])} L "
        f"off site, generating its electricity (grid {worker['country'] or 'world average'} at "
        f"{number(worker['water_intensity_l_per_kwh'])} L/kWh; {worker['water_intensity_source']}). "
        f"Method: {water['formula']}."
    ]
    inference = water["inference"]
    if inference.get("original") and inference.get("result"):
        rows = [
            [name, number(side["onsite_l"]), number(side["offsite_l"]), number(side["water_l"])]
            for name, side in (("Original", inference["original"]), ("Compressed", inference["result"]))
        ]
        deployment = inference["deployment"]
        parts.append(
            f"Water per 1,000 inferences where the model serves (grid {deployment['country'] or 'world average'}, "
            f"WUE {number(deployment['wue_l_per_kwh'])} L/kWh, PUE {number(deployment['pue'])}):\n\n"
            + table(["", "on-site L", "off-site L", "total L"], rows)
        )
    parts.append(_payback(water["payback"]))
    return parts


def _embodied(embodied: dict[str, Any]) -> list[str]:
    if embodied.get("method") != "estimated":
        return [f"The hardware's embodied impact was not estimated: {embodied.get('error') or embodied.get('method')}."]
    inputs, total = embodied["inputs"], embodied["total"]
    components = "; ".join(
        f"{c['description']} (share {number(c['share'])}: {c['share_reason']})" for c in inputs["components"]
    )
    parts = [
        f"The hardware this job held embodies {number(total['gwp_g'])} g CO2e of manufacture"
        + (f", {number(total['adp_kgsbeq'])} kg Sb eq of abiotic resources" if total.get("adp_kgsbeq") is not None else "")
        + (f" and {number(total['pe_mj'])} MJ of primary energy" if total.get("pe_mj") is not None else "")
        + f", over {number(total['duration_s'])} s: {components}. {inputs['tool']} {inputs['tool_version']}, "
        f"lifetime {inputs['lifetime_hours']:,.0f} h ({inputs['lifetime_source']}); {inputs['allocation']}. "
        f"Not included: {inputs['left_out']}"
    ]
    inference = embodied.get("inference") or {}
    if inference.get("original") and inference.get("result"):
        rows = [
            [name, number(side["seconds"]), number(side["gwp_g"])]
            for name, side in (("Original", inference["original"]), ("Compressed", inference["result"]))
        ]
        parts.append(
            f"Embodied impact per 1,000 inferences ({', '.join(inference['components'])} for the measured time):\n\n"
            + table(["", "seconds", "g CO2e"], rows)
        )
    parts.append(_payback(embodied["payback"]))
    return parts


def footprint_section(report: dict[str, Any]) -> str | None:
    parts = []
    if isinstance(report.get("water"), dict):
        parts += _water(report["water"])
    if isinstance(report.get("embodied"), dict):
        parts += _embodied(report["embodied"])
    return "\n\n".join(["## Water and embodied impact", *parts]) if parts else None
