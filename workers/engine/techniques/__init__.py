"""The techniques the engine offers, registered by this explicit list (no package walking)."""

from workers.engine.registry import register_technique
from workers.engine.techniques.cluster import ClusterConfig, apply_cluster
from workers.engine.techniques.distill import DistillConfig, apply_distill
from workers.engine.techniques.huffman import HuffmanConfig, apply_huffman
from workers.engine.techniques.low_rank import LowRankConfig, apply_low_rank
from workers.engine.techniques.prune import PruneConfig, apply_prune
from workers.engine.techniques.quantize import QuantizeConfig, apply_quantize

register_technique(QuantizeConfig, apply_quantize)
register_technique(LowRankConfig, apply_low_rank)
register_technique(HuffmanConfig, apply_huffman)
register_technique(ClusterConfig, apply_cluster)
register_technique(PruneConfig, apply_prune)
register_technique(DistillConfig, apply_distill)
