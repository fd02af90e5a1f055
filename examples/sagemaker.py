"""Call an Amazon SageMaker real-time endpoint that hosts an LLM container.

    pip install 'llmrouter[sagemaker]'          # botocore: SigV4 and the AWS credential chain
    python examples/sagemaker.py my-llm-endpoint --region us-east-1

The ``messages`` dialect (the default) sends OpenAI chat bodies, which TGI >= 2 and LMI/vLLM
containers accept on ``/invocations``; ``--dialect tgi`` sends TGI's ``inputs`` form for older
containers. Credentials come from the standard AWS chain (environment, ``~/.aws`` profiles,
SSO, EKS web identity, ECS, EC2 instance metadata), exactly as boto3 finds them; nothing here
names a key. ``--endpoint-url`` targets a VPC interface endpoint (or a test server).

The URL this builds can go into ``LLMROUTER_URL`` like any other backend, for example as the
fallback behind a self-hosted vLLM:

    LLMROUTER_URL="vllm://gpu-1:8000, sagemaker://my-llm-endpoint?region=us-east-1"
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlencode

from llmrouter import Client, LLMRouterError


def sagemaker_url(endpoint: str, region: str, endpoint_url: str | None, dialect: str) -> str:
    options = {"region": region, "dialect": dialect}
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    return f"sagemaker://{endpoint}?{urlencode(options)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", help="the SageMaker endpoint name")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--endpoint-url", help="SageMaker Runtime base URL (default: AWS's)")
    parser.add_argument("--dialect", choices=["messages", "tgi"], default="messages")
    parser.add_argument("question", nargs="?", default="What is the capital of France?")
    args = parser.parse_args(argv)

    url = sagemaker_url(args.endpoint, args.region, args.endpoint_url, args.dialect)
    messages = [
        {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
        {"role": "user", "content": args.question},
    ]
    try:
        with Client(url) as client:
            # InvokeEndpoint: one JSON answer.
            resp = client.chat.completions.create(messages=messages, max_tokens=64)
            print(resp.choices[0].message.content)
            print(f"[{resp.route.backend}]", file=sys.stderr)

            # InvokeEndpointWithResponseStream: AWS event-stream frames, decoded incrementally.
            with client.chat.completions.create(
                messages=messages, max_tokens=64, stream=True
            ) as stream:
                for chunk in stream:
                    if chunk.choices:
                        print(chunk.choices[0].delta.content or "", end="", flush=True)
            print()
    except LLMRouterError as exc:  # no credentials, no region, 403 from AWS, a 5xx, ...
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
