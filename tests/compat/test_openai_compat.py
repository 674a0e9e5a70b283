"""The official `openai` client, unmodified, against `ferrogpt serve`.

Needs BASE_URL and API_KEY in the environment (tests/compat/run.sh sets them) and a server
started with `--tpm 4000` so that one oversized request is refused as "request too large",
and with a moderation model (run.sh makes one if the model folder has none).
Run: python3 tests/compat/test_openai_compat.py -v
"""

import json
import os
import unittest

import openai

BASE_URL = os.environ["BASE_URL"]
API_KEY = os.environ["API_KEY"]


def client(key=API_KEY):
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key=key, max_retries=0, timeout=120)


class CompatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = client()
        models = cls.c.models.list().data
        aliases = [m for m in models if getattr(m, "snapshot", None)]
        assert aliases, f"no alias among {models}"
        cls.alias = aliases[0].id
        cls.snapshot = aliases[0].snapshot
        cls.context = aliases[0].context_length

    def chat(self, **kw):
        kw.setdefault("model", self.alias)
        kw.setdefault(
            "messages",
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Tell me about the sea."},
            ],
        )
        kw.setdefault("max_tokens", 16)
        return self.c.chat.completions.create(**kw)

    def test_models_list_and_retrieve(self):
        ids = [m.id for m in self.c.models.list().data]
        self.assertIn(self.alias, ids)
        self.assertIn(self.snapshot, ids)
        m = self.c.models.retrieve(self.alias)
        self.assertEqual(m.id, self.alias)
        self.assertEqual(m.object, "model")

    def test_chat_with_system_message_reports_snapshot_and_usage(self):
        r = self.chat(temperature=0)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.model, self.snapshot)
        self.assertEqual(len(r.choices), 1)
        choice = r.choices[0]
        self.assertEqual(choice.message.role, "assistant")
        self.assertIsInstance(choice.message.content, str)
        self.assertIn(choice.finish_reason, ("stop", "length"))
        self.assertGreater(r.usage.prompt_tokens, 0)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)
        self.assertLessEqual(r.usage.completion_tokens, 16)

    def test_streaming_with_usage_matches_non_streaming(self):
        plain = self.chat(temperature=0)
        stream = self.chat(temperature=0, stream=True, stream_options={"include_usage": True})
        text, usage, finish, chunks = "", None, None, 0
        for chunk in stream:
            chunks += 1
            self.assertEqual(chunk.object, "chat.completion.chunk")
            self.assertEqual(chunk.model, self.snapshot)
            if chunk.usage is not None:
                self.assertEqual(chunk.choices, [])
                usage = chunk.usage
                continue
            delta = chunk.choices[0].delta
            text += delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        self.assertGreater(chunks, 2)
        self.assertEqual(text, plain.choices[0].message.content)
        self.assertEqual(finish, plain.choices[0].finish_reason)
        self.assertIsNotNone(usage)
        self.assertEqual(usage.completion_tokens, plain.usage.completion_tokens)
        self.assertEqual(usage.prompt_tokens, plain.usage.prompt_tokens)

    def test_n_choices(self):
        r = self.chat(n=2, temperature=1.0, seed=5)
        self.assertEqual([c.index for c in r.choices], [0, 1])

    def test_seed_makes_sampling_reproducible(self):
        a = self.chat(temperature=1.0, seed=1234)
        b = self.chat(temperature=1.0, seed=1234)
        self.assertEqual(a.choices[0].message.content, b.choices[0].message.content)

    def test_stop_sequence(self):
        full = self.chat(temperature=0, max_tokens=24).choices[0].message.content
        if len(full) < 4:
            self.skipTest(f"greedy reply too short to cut: {full!r}")
        stop = full[len(full) // 2 : len(full) // 2 + 2]
        r = self.chat(temperature=0, max_tokens=24, stop=[stop, "\u2603never"])
        self.assertEqual(r.choices[0].message.content, full[: full.find(stop)])
        self.assertEqual(r.choices[0].finish_reason, "stop")

    def test_logprobs(self):
        r = self.chat(temperature=0, logprobs=True, top_logprobs=3, max_tokens=8)
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), r.usage.completion_tokens)
        for t in content:
            self.assertLessEqual(t.logprob, 0.0)
            self.assertEqual(len(t.top_logprobs), 3)
            # Greedy decoding picks the most likely token.
            self.assertAlmostEqual(t.logprob, t.top_logprobs[0].logprob, places=4)
            self.assertIsInstance(t.bytes, list)

    def test_json_mode_returns_valid_json(self):
        for max_tokens in (12, 60):
            r = self.chat(
                response_format={"type": "json_object"},
                temperature=1.0,
                seed=7,
                max_tokens=max_tokens,
                messages=[{"role": "user", "content": "Reply in JSON."}],
            )
            value = json.loads(r.choices[0].message.content)
            self.assertIsInstance(value, dict)

    def test_legacy_completions_echo_logprobs(self):
        r = self.c.completions.create(model=self.alias, prompt="The sea is", max_tokens=0, echo=True, logprobs=1)
        lp = r.choices[0].logprobs
        self.assertEqual(r.choices[0].text, "The sea is")
        # A text prompt starts with <|bos|> (not echoed), so even its first token is scored;
        # OpenAI's models have no such start and send null there.
        self.assertTrue(all(x is not None and x <= 0 for x in lp.token_logprobs))
        self.assertEqual("".join(lp.tokens), "The sea is")
        self.assertEqual(r.usage.completion_tokens, 0)

    def test_context_length_exceeded(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            self.chat(messages=[{"role": "user", "content": "sea " * (self.context * 2)}])
        self.assertEqual(cm.exception.code, "context_length_exceeded")
        self.assertEqual(cm.exception.param, "messages")

    def test_bad_key(self):
        with self.assertRaises(openai.AuthenticationError) as cm:
            client("sk-not-a-real-key-0000").chat.completions.create(
                model=self.alias, messages=[{"role": "user", "content": "hi"}]
            )
        self.assertEqual(cm.exception.code, "invalid_api_key")

    def test_unknown_model(self):
        with self.assertRaises(openai.NotFoundError) as cm:
            self.chat(model="gpt-4-0314")
        self.assertEqual(cm.exception.code, "model_not_found")

    def test_request_larger_than_tpm(self):
        # n x max_tokens alone is over the server's 4,000 TPM.
        with self.assertRaises(openai.RateLimitError) as cm:
            self.chat(n=64, max_tokens=min(100, self.context // 2))
        self.assertEqual(cm.exception.code, "rate_limit_exceeded")
        self.assertEqual(cm.exception.response.headers["x-should-retry"], "false")

    def test_rate_limit_headers(self):
        raw = self.c.chat.completions.with_raw_response.create(
            model=self.alias, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        for h in ("requests", "tokens"):
            for part in ("limit", "remaining", "reset"):
                self.assertIn(f"x-ratelimit-{part}-{h}", raw.headers)
        self.assertEqual(raw.headers["x-ratelimit-limit-tokens"], "4000")

    def test_moderations(self):
        texts = ["How do I bake bread?", "Tell me about the sea."]
        r = self.c.moderations.create(input=texts)
        self.assertTrue(r.id.startswith("modr-"))
        self.assertEqual(r.model, "ferrogpt-moderation")
        self.assertEqual(len(r.results), len(texts))
        categories = [
            "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
            "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions",
            "sexual", "sexual/minors", "violence", "violence/graphic",
        ]
        for result in r.results:
            self.assertIsInstance(result.flagged, bool)
            flags = result.categories.model_dump(by_alias=True)
            scores = result.category_scores.model_dump(by_alias=True)
            self.assertEqual(sorted(flags), sorted(categories))
            self.assertEqual(sorted(scores), sorted(categories))
            for name in categories:
                self.assertIsInstance(flags[name], bool)
                self.assertTrue(0.0 <= scores[name] <= 1.0, (name, scores[name]))
            # The client's attribute names for the slashed and dashed keys.
            self.assertIsInstance(result.categories.self_harm, bool)
            self.assertIsInstance(result.category_scores.harassment_threatening, float)
            self.assertEqual(result.category_applied_input_types.violence, ["text"])
        one = self.c.moderations.create(input="Tell me about the sea.", model="ferrogpt-moderation")
        self.assertEqual(len(one.results), 1)
        ids = [m.id for m in self.c.models.list().data]
        self.assertIn("ferrogpt-moderation", ids)

    def test_moderations_refuse_empty_input(self):
        with self.assertRaises(openai.BadRequestError) as e:
            self.c.moderations.create(input=[])
        self.assertEqual(e.exception.body["param"], "input")


if __name__ == "__main__":
    unittest.main()
