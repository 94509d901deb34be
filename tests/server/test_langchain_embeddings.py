"""LangChain's OpenAIEmbeddings against the embedding server, in a three-line RAG chain with ChatOpenAI."""

from __future__ import annotations

import numpy as np
import pytest

from tests.server.conftest import EMBEDDING_MODEL_NAME, MODEL_NAME

langchain_openai = pytest.importorskip("langchain_openai")

DOCUMENTS = [
    "PagedAttention stores the KV cache in fixed-size blocks, like pages of virtual memory.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, finished in 1889.",
    "Cats sleep between twelve and sixteen hours a day.",
]
QUESTIONS = {"Where is the Eiffel Tower?": 1, "How long do cats sleep?": 2, "How is the KV cache stored?": 0}


@pytest.fixture
def embeddings(embedding_server):
    # OpenAI-compatible servers get raw text: the default would send tiktoken's (OpenAI's) token ids.
    return langchain_openai.OpenAIEmbeddings(
        model=EMBEDDING_MODEL_NAME, base_url=f"{embedding_server.base_url}/v1", api_key="unused",
        check_embedding_ctx_length=False, max_retries=0,
    )


def test_embed_query_and_documents_agree(embeddings):
    documents = np.array(embeddings.embed_documents(DOCUMENTS))
    query = np.array(embeddings.embed_query(DOCUMENTS[1]))
    assert documents.shape == (3, 384) and np.allclose(documents[1], query, atol=1e-6)


def test_rag_chain(embeddings, server):
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough
    from langchain_core.vectorstores import InMemoryVectorStore

    llm = langchain_openai.ChatOpenAI(
        model=MODEL_NAME, base_url=f"{server.base_url}/v1", api_key="unused", temperature=0, max_tokens=8, max_retries=0
    )
    prompt = ChatPromptTemplate.from_template("Answer from the context.\nContext: {context}\nQuestion: {question}")

    retriever = InMemoryVectorStore.from_texts(DOCUMENTS, embeddings).as_retriever(search_kwargs={"k": 1})
    retrieve = {"context": retriever | (lambda docs: docs[0].page_content), "question": RunnablePassthrough()}
    chain = retrieve | prompt | llm | StrOutputParser()

    for question, document in QUESTIONS.items():
        assert f"Context: {DOCUMENTS[document]}\n" in (retrieve | prompt).invoke(question).to_string()
    answer = chain.invoke("Where is the Eiffel Tower?")
    assert isinstance(answer, str) and answer  # the tiny test model's words are random; retrieval is checked above
