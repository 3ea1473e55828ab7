"""Neural-field building blocks: encodings, small MLPs and the attenuation field."""

from jaxmedrf.fields.encodings import (
    HASH_PRIMES as HASH_PRIMES,
    FrequencyConfig as FrequencyConfig,
    HashGridConfig as HashGridConfig,
    frequency_encode as frequency_encode,
    hash_grid_encode as hash_grid_encode,
    hash_grid_init as hash_grid_init,
)
from jaxmedrf.fields.field import (
    FieldConfig as FieldConfig,
    field_apply as field_apply,
    field_init as field_init,
    make_field_fn as make_field_fn,
    query_grid as query_grid,
)
from jaxmedrf.fields.lineformer import (
    LineformerConfig as LineformerConfig,
    line_attention as line_attention,
    lineformer_apply as lineformer_apply,
    lineformer_init as lineformer_init,
    lineformer_query_grid as lineformer_query_grid,
)
from jaxmedrf.fields.mlp import (
    MLPParams as MLPParams,
    leaky_relu as leaky_relu,
    mlp_apply as mlp_apply,
    mlp_init as mlp_init,
)

__all__ = (
    "HASH_PRIMES",
    "FieldConfig",
    "FrequencyConfig",
    "HashGridConfig",
    "LineformerConfig",
    "MLPParams",
    "field_apply",
    "field_init",
    "frequency_encode",
    "hash_grid_encode",
    "hash_grid_init",
    "leaky_relu",
    "line_attention",
    "lineformer_apply",
    "lineformer_init",
    "lineformer_query_grid",
    "make_field_fn",
    "mlp_apply",
    "mlp_init",
    "query_grid",
)
