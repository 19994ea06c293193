"""The job's brief is written once per job, even when several variants ask at the same moment."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from tests.fixtures.db import count_rows, create_job
from tests.openai_stub_server import openai_stub_server
from variant_pipeline.config import load_settings
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import JobRequest, add_tenant, submit_job
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.handlers.base import HandlerContext
from variant_pipeline.handlers.brief import ensure_brief
from variant_pipeline.models.text import text_model_from_settings


class _TextOnlyModels:
    def __init__(self) -> None:
        self.model = text_model_from_settings(load_settings())

    def get(self, family: str):
        return self.model


def _context(engine, job_id: str) -> HandlerContext:
    settings = load_settings()
    return HandlerContext(engine=engine, store=AssetStore.from_settings(settings), settings=settings,
                          models=_TextOnlyModels(), origin="test:brief", partition_key=job_id)


def test_missing_texts_are_written_once_per_job_under_concurrency(db_env, monkeypatch) -> None:
    engine = get_engine(db_env)
    job = create_job(engine, variants=3, description="얼큰한 부대찌개 2인분")  # description only
    with openai_stub_server() as stub:
        monkeypatch.setenv("VP_TEXT_BACKEND", "openai")
        monkeypatch.setenv("VP_OPENAI_BASE_URL", stub.base_url)
        results = []
        barrier = threading.Barrier(3)

        def ask() -> None:
            barrier.wait()
            results.append(ensure_brief(_context(engine, str(job.job_id)), str(job.job_id), need=["ad_copy_kor"]))

        threads = [threading.Thread(target=ask) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls = len(stub.requests)

    assert len(results) == 3
    writers = [r for r in results if r.generated]
    assert len(writers) == 1 and writers[0].generated == ("desc_eng", "ad_copy_eng", "ad_copy_kor")
    assert calls == 3  # one model call per text, not per variant
    assert len({(r.desc_eng, r.ad_copy_eng, r.ad_copy_kor) for r in results}) == 1
    assert all(r.ad_copy_kor for r in results)
    assert count_rows(engine, "llm_traces") == 3
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT desc_eng, ad_copy_eng, ad_copy_kor FROM job_inputs WHERE job_id = :j"),
                              {"j": str(job.job_id)}).one()
    assert tuple(stored) == (results[0].desc_eng, results[0].ad_copy_eng, results[0].ad_copy_kor)


def test_texts_given_with_the_job_are_never_rewritten(db_env, monkeypatch) -> None:
    engine = get_engine(db_env)
    add_tenant(engine, "tenant-a")
    job = submit_job(engine, JobRequest.build(
        tenant_id="tenant-a", description_kor="수제 버거", ad_copy_eng="Juicy burgers, made by hand.",
        ad_copy_kor="육즙 가득 수제버거"))
    with openai_stub_server() as stub:
        monkeypatch.setenv("VP_TEXT_BACKEND", "openai")
        monkeypatch.setenv("VP_OPENAI_BASE_URL", stub.base_url)
        brief = ensure_brief(_context(engine, str(job.job_id)), str(job.job_id), need=["ad_copy_eng", "ad_copy_kor"])
        assert stub.requests == []
    assert brief.generated == ()
    assert (brief.ad_copy_eng, brief.ad_copy_kor) == ("Juicy burgers, made by hand.", "육즙 가득 수제버거")
