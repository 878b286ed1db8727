"""The techniques the engine offers, registered by this explicit list (no package walking).

Only the params are imported here; each handler is imported when a job first runs its technique.
"""

from workers.engine.federated.config import FederatedConfig
from workers.engine.registry import register_technique
from workers.engine.techniques.cluster_config import ClusterConfig
from workers.engine.techniques.distill_config import DistillConfig
from workers.engine.techniques.finetune_config import FinetuneConfig
from workers.engine.techniques.huffman_config import HuffmanConfig
from workers.engine.techniques.llm import LlmQuantizeConfig
from workers.engine.techniques.low_rank_config import LowRankConfig
from workers.engine.techniques.prune import PruneConfig
from workers.engine.techniques.quantize import QuantizeConfig

register_technique(QuantizeConfig, "workers.engine.techniques.quantize.handler:apply_quantize")
register_technique(LowRankConfig, "workers.engine.techniques.low_rank:apply_low_rank")
register_technique(HuffmanConfig, "workers.engine.techniques.huffman:apply_huffman")
register_technique(ClusterConfig, "workers.engine.techniques.cluster:apply_cluster")
register_technique(PruneConfig, "workers.engine.techniques.prune.handler:apply_prune")
register_technique(DistillConfig, "workers.engine.techniques.distill:apply_distill")
register_technique(LlmQuantizeConfig, "workers.engine.techniques.llm.handler:apply_llm_quantize")
register_technique(FinetuneConfig, "workers.engine.techniques.finetune:apply_finetune")
register_technique(FederatedConfig, "workers.engine.federated.handler:apply_federated")
