"""What `POST /v1/jobs?dry_run=true` answers: each layer's columns, counts and first rows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.services.dry_runs import DryRun, LayerPreview


class ColumnPublic(BaseModel):
    name: str
    type: str = Field(description="The column's SQL type as DuckDB names it, e.g. DECIMAL(12,2).")


class LayerPreviewPublic(BaseModel):
    columns: list[ColumnPublic]
    rows: int = Field(description="Rows the layer holds after the sample ran through it.")
    rejects: int = Field(description="Rows its checks refused.")
    deduped: int = Field(description="Rows its dedupe dropped.")
    sample: list[dict[str, Any]] = Field(
        description="Its first 20 rows, valued as `GET /v1/jobs/{id}/output` values them.")

    @classmethod
    def of(cls, layer: LayerPreview) -> LayerPreviewPublic:
        return cls(columns=[ColumnPublic(**c) for c in layer.columns], rows=layer.rows,
                   rejects=layer.rejects, deduped=layer.deduped, sample=layer.sample)


class DryRunPublic(BaseModel):
    """A dry run's result: nothing was created, no file was left."""

    valid: Literal[True] = True
    sample_rows: int = Field(description="Source rows read at most, in file-name then line order.")
    layers: dict[str, LayerPreviewPublic] = Field(description="ods, dwd, dws and ds, in order.")

    @classmethod
    def of(cls, run: DryRun) -> DryRunPublic:
        layers = {name: LayerPreviewPublic.of(layer) for name, layer in run.layers.items()}
        return cls(sample_rows=run.sample_rows, layers=layers)
