"""`kt`: the command line of the Knowledge Tracing pipeline.

    kt demo                         sample data -> ETL -> training -> nightly refresh -> DynamoDB -> chart
    kt sample --users 2000          simulated EdNet data (+ oracle, + tutor answers) into the lake
    kt etl --engine python          raw/ -> processed/ (sequences, skills, manifest, quarantine)
    kt train --epochs=5             DKT training (SageMaker contract; paths overridable)
    kt evaluate                     test-split metrics vs base rate, Bayesian, oracle
    kt predict < request.json       one mastery response (docs/contracts.md §6), 4xx-style errors as JSON
    kt refresh --run-date D         nightly mastery refresh into kt-mastery
    kt chart --user U --out f.png   the Knowledge State spider chart of one user
    kt lake check                   lines of the lake's answers and batch outputs served or quarantined, with reasons

Settings come from the environment (see kt.config / README); flags override them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from datetime import date, datetime, timezone

from kt.config import ConfigError, Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    if getattr(args, "lake", None):
        settings = dataclasses.replace(settings, lake=args.lake)
    return settings


def cmd_sample(args: argparse.Namespace) -> int:
    from kt import sample

    counts = sample.generate(_settings(args).lake, users=args.users, skills=args.skills, fmt=args.format, seed=args.seed)
    print(json.dumps(counts, indent=1))
    return 0


def cmd_etl(args: argparse.Namespace) -> int:
    from kt import etl, lake

    settings = _settings(args)
    uris = lake.uris(settings)
    if args.engine == "spark":
        from kt import spark_etl

        run = spark_etl.run
    else:
        run = etl.run_etl
    manifest = etl.publish(uris["processed"], lambda version: run(
        uris["raw"], version, fmt=args.format, skill_mappings=args.skill_mappings), settings.keep_versions)
    print(json.dumps({k: v for k, v in manifest.items() if k != "inputs"}, indent=1))
    return 0


def cmd_train(argv: list[str]) -> int:
    from kt import train

    return train.main(argv)


def _model_url(settings: Settings, model: str | None) -> str:
    from kt import pipeline

    if model:
        return model
    current = pipeline.current_model(settings)
    if current is None:
        raise SystemExit("no --model given and no promoted model (models/dkt/current.json): run `kt demo` or train first")
    return current["model_data_url"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from kt import evaluate, pipeline

    settings = _settings(args)
    model_url = _model_url(settings, args.model)
    report = pipeline.evaluate_model(settings, model_url)
    print(evaluate.format_report(report))
    print(f"reliability diagram: {pipeline.reliability_uri(model_url)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from kt import artifact, inference

    settings = _settings(args)
    body = open(args.request, "rb").read() if args.request and args.request != "-" else sys.stdin.buffer.read()
    with tempfile.TemporaryDirectory() as tmp:
        model = inference.model_fn(artifact.unpack(_model_url(settings, args.model), tmp))
    try:
        out = inference.output_fn(inference.predict_fn(inference.input_fn(body, args.content_type), model), args.accept)
    except inference.RequestError as e:
        print(e.message)
        print(f"HTTP {e.status_code}: {e.error}", file=sys.stderr)
        return 2
    print(out.rstrip("\n"))
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from kt import aws, aws_requests, pipeline

    settings = _settings(args)
    run_date = args.run_date or date.today().isoformat()
    with aws.local_aws(settings) as settings:
        summary = pipeline.refresh_local(settings, run_date, aws_requests.run_id(datetime.now(timezone.utc)),
                                         pipeline.sagemaker_work_dir(settings))
    print(json.dumps(dataclasses.asdict(summary), indent=1))
    return 0


def cmd_chart(args: argparse.Namespace) -> int:
    from kt import aws, pipeline

    settings = _settings(args)
    with aws.local_aws(settings) as settings:
        pipeline.sync_local_tables(settings)
        path = pipeline.user_chart(settings, args.user, args.out)
    print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kt import demo

    return demo.run(_settings(args), users=args.users, skills=args.skills, seed=args.seed, epochs=args.epochs)


def cmd_api(args: argparse.Namespace) -> int:
    from kt import api

    return api.main(_settings(args), host=args.host, port=args.port, endpoint_url=args.endpoint_url)


def cmd_endpoint_serve(args: argparse.Namespace) -> int:
    from kt import serve

    return serve.main(model=args.model, host=args.host, port=args.port, workers=args.workers)


def cmd_ingest(args: argparse.Namespace) -> int:
    from kt import ingest

    return ingest.main(_settings(args), source=args.source, fmt=args.format, consolidate=args.consolidate_kt1)


def cmd_drift(args: argparse.Namespace) -> int:
    from kt import drift

    return drift.main(_settings(args), run_date=args.run_date or date.today().isoformat())


def cmd_lake_check(args: argparse.Namespace) -> int:
    from kt import lake_check

    report = lake_check.check(_settings(args).lake)
    print(json.dumps(report, indent=1))
    return 1 if report["quarantined"] else 0


def cmd_package(args: argparse.Namespace) -> int:
    from kt import package

    return package.main(out_dir=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--lake", help="lake root: a directory or s3://bucket[/prefix] (default: KT_LAKE or .kt/lake)")
        return p

    p = add("demo", "run the whole pipeline locally on simulated students and print a summary")
    p.add_argument("--users", type=int, default=2000, help="simulated EdNet students (default 2000)")
    p.add_argument("--skills", type=int, default=16, help="skills, spread over the 8 topics (default 16)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=8, help="training epochs at most (early stopping on valid AUC)")
    p.set_defaults(func=cmd_demo)

    p = add("sample", "write simulated EdNet-format raw data, its oracle and tutor answers into the lake")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--skills", type=int, default=40)
    p.add_argument("--format", choices=["riiid", "kt1"], default="riiid")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_sample)

    p = add("etl", "turn raw/ednet into processed/ednet (sequences, skills, manifest, quarantine)")
    p.add_argument("--engine", choices=["python", "spark"], default="python")
    p.add_argument("--format", choices=["riiid", "kt1"], help="input format (default: detected)")
    p.add_argument("--skill-mappings", help="skill->topic JSON (default: raw/ednet/skill_mappings.json, else the seed's)")
    p.set_defaults(func=cmd_etl)

    sub.add_parser("train", help="train DKT (kt train --help for its options)", add_help=False)

    p = add("evaluate", "test-split AUC, accuracy, log loss and ECE of a model next to the baselines")
    p.add_argument("--model", help="model.tar.gz URI (default: the promoted model)")
    p.set_defaults(func=cmd_evaluate)

    p = add("predict", "mastery for one request (JSON on stdin or a file), as the endpoint answers")
    p.add_argument("request", nargs="?", help="request file (default: stdin)")
    p.add_argument("--model", help="model.tar.gz URI (default: the promoted model)")
    p.add_argument("--content-type", default="application/json")
    p.add_argument("--accept", default="application/json")
    p.set_defaults(func=cmd_predict)

    p = add("refresh", "nightly refresh: users active since the last run -> batch transform -> kt-mastery")
    p.add_argument("--run-date", help="ISO date of the run (default: today)")
    p.set_defaults(func=cmd_refresh)

    p = add("chart", "draw the Knowledge State spider chart of one user (DKT vs Bayesian)")
    p.add_argument("--user", required=True)
    p.add_argument("--out", default="knowledge_state.png")
    p.set_defaults(func=cmd_chart)

    p = add("api", "serve the mastery API and the Knowledge State page (local twin of API Gateway)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--endpoint-url", help="base URL of a local endpoint (`kt endpoint serve`), used instead of "
                   "SAGEMAKER_KT_ENDPOINT when SAGEMAKER_KT_ENABLED=true")
    p.set_defaults(func=cmd_api)

    p = add("ingest", "copy or download EdNet/Riiid files into raw/ednet/ (checksums, idempotent)")
    p.add_argument("--source", required=True, help="local path, http(s):// or s3:// URL of the files or an archive")
    p.add_argument("--format", choices=["riiid", "kt1"], default="riiid")
    p.add_argument("--no-consolidate-kt1", dest="consolidate_kt1", action="store_false",
                   help="keep KT1's per-user files (default: pack them into ~128 MB shards with a user_id column)")
    p.set_defaults(func=cmd_ingest)

    p = add("drift", "compare recent answers and predictions with the model's reference; publish the KT metric")
    p.add_argument("--run-date", help="ISO date of the run (default: today)")
    p.set_defaults(func=cmd_drift)

    p = sub.add_parser("lake", help="checks of the lake")
    lake_sub = p.add_subparsers(dest="lake_command", required=True)
    p = lake_sub.add_parser("check", help="lines of events/answers/ and of the batch transform's inputs and outputs: "
                            "served or quarantined, with the reasons (exit 1 when any is quarantined)")
    p.add_argument("--lake", help="lake root: a directory or s3://bucket[/prefix] (default: KT_LAKE or .kt/lake)")
    p.set_defaults(func=cmd_lake_check)

    p = sub.add_parser("endpoint", help="SageMaker hosting contract on this machine")
    endpoint_sub = p.add_subparsers(dest="endpoint_command", required=True)
    p = endpoint_sub.add_parser("serve", help="serve GET /ping and POST /invocations from a model.tar.gz")
    p.add_argument("--model", required=True, help="model.tar.gz path or URI")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_endpoint_serve)

    p = sub.add_parser("package", help="build dist/kt_glue.zip (Glue --extra-py-files) and dist/sourcedir.tar.gz")
    p.add_argument("--out", default="dist")
    p.set_defaults(func=cmd_package)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return cmd_train(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
