"""A third-party plugin as a user would write one: registers a generator and an embedder."""

import numpy as np


class EchoGenerator:
    """Answers with the first source's first sentence (or 'no sources'); options are kept."""

    def __init__(self, name, adapter=None, **options):
        self.name, self.adapter, self.options = name, adapter, options

    def render(self, prompt):
        return "\n".join(m["content"] for m in prompt)

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]

    def generate(self, prompts, max_new_tokens=48):
        out = []
        for p in prompts:
            user = p[-1]["content"]
            body = user.split(">", 1)[1].split("</source>", 1)[0].strip() if "<source" in user else "no sources"
            out.append(" ".join((body.split(".")[0] + (" [1]" if "<source" in user else "")).split()[:max_new_tokens]))
        return out

    def stream(self, prompt, max_new_tokens=48):
        yield from self.generate([prompt], max_new_tokens)[0].split(" ")


class LengthEmbedder:
    """A 4-d embedder from character statistics (enough to build and query an index)."""

    name, dim = "echo-embed", 4

    def embed(self, texts):
        v = np.array(
            [[len(t), t.count(" ") + 1, sum(c.isupper() for c in t) + 1, 1.0] for t in texts], dtype=np.float32
        )
        return v / np.linalg.norm(v, axis=1, keepdims=True) if len(v) else np.zeros((0, 4), np.float32)

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]


def register(reg):
    reg.add_generator("echo-gen", EchoGenerator, "echoes the first source (a test plugin)")
    reg.add_embedder("echo-embed", lambda name, **opts: LengthEmbedder(), "4-d character statistics (a test plugin)")
