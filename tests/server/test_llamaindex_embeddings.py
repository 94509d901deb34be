"""LlamaIndex's OpenAILikeEmbedding against the embedding server: vectors equal the server's own, and a
vector index retrieves the document each question is about."""

from __future__ import annotations

import numpy as np
import pytest

from tests.server.conftest import EMBEDDING_MODEL_NAME
from tests.server.test_langchain_embeddings import DOCUMENTS, QUESTIONS

openai_like = pytest.importorskip("llama_index.embeddings.openai_like")


@pytest.fixture
def embed_model(embedding_server):
    return openai_like.OpenAILikeEmbedding(
        model_name=EMBEDDING_MODEL_NAME, api_base=f"{embedding_server.base_url}/v1", api_key="unused", max_retries=0
    )


def test_text_and_query_embeddings_equal_the_servers(embed_model, embedding_server):
    import openai

    client = openai.OpenAI(base_url=f"{embedding_server.base_url}/v1", api_key="unused", max_retries=0)
    expected = [item.embedding for item in client.embeddings.create(model=EMBEDDING_MODEL_NAME, input=DOCUMENTS).data]
    assert np.allclose(embed_model.get_text_embedding_batch(DOCUMENTS), expected, atol=1e-6)
    assert np.allclose(embed_model.get_query_embedding(DOCUMENTS[1]), expected[1], atol=1e-6)


def test_a_vector_index_retrieves_each_questions_document(embed_model):
    from llama_index.core import Document, VectorStoreIndex

    index = VectorStoreIndex.from_documents([Document(text=text) for text in DOCUMENTS], embed_model=embed_model)
    retriever = index.as_retriever(similarity_top_k=1)
    for question, document in QUESTIONS.items():
        (hit,) = retriever.retrieve(question)
        assert hit.node.get_content() == DOCUMENTS[document]
