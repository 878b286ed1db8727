"""Prometheus metrics. Job and energy figures are read from the database at scrape time, so every
API replica reports the same truth; upload bytes are counted by the process that received them."""

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app.db.session import session_scope
from app.energy.orm import EnergyRecord
from app.jobs.orm import FINISHED_STATUSES, JOB_STATUSES, Job

DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

registry = CollectorRegistry()
upload_bytes = Counter(
    "compresso_upload_bytes", "Bytes received in model and dataset uploads.", ["kind"], registry=registry
)


class DatabaseCollector(Collector):
    def collect(self) -> Iterator:
        with session_scope() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            finished = session.execute(
                select(Job.started_at, Job.finished_at).where(
                    Job.status.in_(FINISHED_STATUSES), Job.started_at.is_not(None), Job.finished_at.is_not(None)
                )
            ).all()
            energy = session.execute(
                select(
                    EnergyRecord.method,
                    func.sum(EnergyRecord.cpu_kwh),
                    func.sum(EnergyRecord.gpu_kwh),
                    func.sum(EnergyRecord.ram_kwh),
                    func.sum(EnergyRecord.co2e_g),
                ).group_by(EnergyRecord.method)
            ).all()
            water_onsite, water_offsite, embodied = session.execute(
                select(
                    func.coalesce(func.sum(EnergyRecord.water_onsite_l), 0.0),
                    func.coalesce(func.sum(EnergyRecord.water_offsite_l), 0.0),
                    func.coalesce(func.sum(EnergyRecord.embodied_gco2e), 0.0),
                )
            ).one()

        jobs = GaugeMetricFamily("compresso_jobs", "Jobs by status.", labels=["status"])
        for status in JOB_STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs

        durations = [(end - start).total_seconds() for start, end in finished]
        buckets = [(str(bound), sum(1 for d in durations if d <= bound)) for bound in DURATION_BUCKETS]
        buckets.append(("+Inf", len(durations)))
        histogram = HistogramMetricFamily(
            "compresso_job_duration_seconds", "Wall time of finished jobs, from start to end."
        )
        histogram.add_metric([], buckets, sum_value=sum(durations))
        yield histogram

        energy_kwh = CounterMetricFamily(
            "compresso_job_energy_kwh", "Energy used by compression jobs themselves.", labels=["component", "method"]
        )
        co2 = CounterMetricFamily("compresso_job_co2e_grams", "CO2e of compression jobs.", labels=["method"])
        for method, cpu, gpu, ram, grams in energy:
            for component, value in (("cpu", cpu), ("gpu", gpu), ("ram", ram)):
                energy_kwh.add_metric([component, method], value or 0.0)
            co2.add_metric([method], grams or 0.0)
        yield energy_kwh
        yield co2

        water = CounterMetricFamily(
            "compresso_job_water_litres",
            "Water of compression jobs: on site (cooling, energy x WUE) and off site (generating their electricity).",
            labels=["site"],
        )
        water.add_metric(["onsite"], water_onsite)
        water.add_metric(["offsite"], water_offsite)
        yield water
        yield CounterMetricFamily(
            "compresso_job_embodied_gco2e",
            "Embodied CO2e (hardware manufacture, amortised over its lifetime) of the time compression jobs held it.",
            value=embodied,
        )


registry.register(DatabaseCollector())
