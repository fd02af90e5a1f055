"""The llmrouter conformance kit against this backend's loopback fake: every case the
built-in backends pass, sync and async, streamed and not."""

from llmrouter_llamacpp_native.fake import start_fake

from llmrouter.testing.conformance import ConformanceSuite


class TestLlamacppNative(ConformanceSuite):
    adapters = {"llamacpp-native": start_fake}  # noqa: RUF012
