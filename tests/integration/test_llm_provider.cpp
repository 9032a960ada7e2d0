// The LLM provider client (tasks/llm_provider.h) against an OpenAI-compatible endpoint served on
// loopback by the test (Poco's HTTP server): a good answer, a fenced answer, HTTP errors, an
// answer that is not JSON, a server that hangs past the timeout, and nobody listening.
#include <gtest/gtest.h>

#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "core/base/errors.h"
#include "llm_provider.h"

namespace cvtasks {
namespace {

// What the fake provider does with the next request, and what it saw.
struct Script {
  std::mutex mu;
  int status = 200;
  std::string content;  // the assistant message's content
  std::string raw;      // when set, the whole body instead of a chat completion
  int delay_ms = 0;
  std::string seen_path, seen_auth;
  json seen_body;
  std::atomic<int> in_flight{0};  // handlers still running (a slow one outlives its client)

  // The server must not be stopped under a running handler: Poco would answer it after the
  // test's objects (and at exit, the process's statics) are gone.
  void wait_idle() const {
    for (int i = 0; i < 300 && in_flight > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
};

class Handler : public Poco::Net::HTTPRequestHandler {
 public:
  explicit Handler(Script& s) : s_(s) {}
  void handleRequest(Poco::Net::HTTPServerRequest& req,
                     Poco::Net::HTTPServerResponse& resp) override {
    ++s_.in_flight;
    struct Done {
      std::atomic<int>& n;
      ~Done() { --n; }
    } done{s_.in_flight};
    std::string body(std::istreambuf_iterator<char>(req.stream()), {});
    std::string out;
    int delay = 0;
    {
      std::lock_guard lock(s_.mu);
      s_.seen_path = req.getURI();
      s_.seen_auth = req.get("Authorization", "");
      s_.seen_body = json::parse(body, nullptr, false);
      resp.setStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(s_.status));
      out = !s_.raw.empty() ? s_.raw
                            : json{{"choices", {{{"message", {{"role", "assistant"},
                                                              {"content", s_.content}}}}}}}
                                  .dump();
      delay = s_.delay_ms;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    resp.setContentType("application/json");
    try {
      resp.send() << out;
    } catch (const Poco::Exception&) {
      // The client gave up (the timeout case).
    }
  }

 private:
  Script& s_;
};

class Factory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit Factory(Script& s) : s_(s) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(const Poco::Net::HTTPServerRequest&) override {
    return new Handler(s_);
  }

 private:
  Script& s_;
};

class LlmProvider : public ::testing::Test {
 protected:
  void SetUp() override {
    Poco::Net::ServerSocket socket(Poco::Net::SocketAddress("127.0.0.1", 0));
    port_ = socket.address().port();
    server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(script_), socket,
                                                       new Poco::Net::HTTPServerParams);
    server_->start();
    config_.base_url = "http://127.0.0.1:" + std::to_string(port_) + "/v1";
    config_.api_key = "sk-test";
    config_.model = "test-model";
    config_.timeout = 2;
  }
  void TearDown() override {
    script_.wait_idle();
    if (server_) server_->stopAll(true);
  }

  Script script_;
  std::unique_ptr<Poco::Net::HTTPServer> server_;
  uint16_t port_ = 0;
  LlmConfig config_;
  const json cv_ = {{"full_name", "Alice"}, {"skills", {"Python"}}};
  const json builtin_ = {{"score", 60}, {"suggestions", {"Add a phone number."}}};
};

TEST_F(LlmProvider, AnswerIsParsedAndMergedIntoTheBuiltinShape) {
  script_.content = R"({"score": 80, "summary": "Solid.", "strengths": ["Python"],
                        "suggestions": ["Quantify results.", "Add a phone number."]})";
  const json answer = ask_llm(config_, cv_, builtin_, std::string("Python dev"));
  EXPECT_EQ(script_.seen_path, "/v1/chat/completions");
  EXPECT_EQ(script_.seen_auth, "Bearer sk-test");
  EXPECT_EQ(script_.seen_body["model"], "test-model");
  const std::string user = script_.seen_body["messages"][1]["content"];
  EXPECT_NE(user.find("Python dev"), std::string::npos);
  EXPECT_NE(user.find("Alice"), std::string::npos);

  const json merged = merge_llm(builtin_, answer, config_.model);
  EXPECT_EQ(merged["provider"], "llm:test-model");
  EXPECT_EQ(merged["score"], 70);
  EXPECT_EQ(merged["builtin_score"], 60);
  EXPECT_EQ(merged["llm"]["score"], 80);
  EXPECT_EQ(merged["llm"]["summary"], "Solid.");
  EXPECT_EQ(merged["suggestions"], json({"Add a phone number.", "Quantify results."}));
}

TEST_F(LlmProvider, FencedAnswerIsAccepted) {
  script_.content = "Here you go:\n```json\n{\"score\": 10}\n```";
  EXPECT_EQ(ask_llm(config_, cv_, builtin_, std::nullopt)["score"], 10);
}

TEST_F(LlmProvider, EveryFailureIsAnLlmErrorWithAReason) {
  auto reason = [&] {
    try {
      ask_llm(config_, cv_, builtin_, std::nullopt);
    } catch (const LlmError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  script_.status = 500;
  script_.content = "{}";
  EXPECT_NE(reason().find("HTTP 500"), std::string::npos);
  script_.status = 200;
  script_.content = "I cannot help with that.";
  EXPECT_NE(reason().find("no JSON object"), std::string::npos);
  script_.raw = "<html>gateway</html>";
  EXPECT_NE(reason().find("not a chat completion"), std::string::npos);
  script_.raw.clear();
  script_.content = "{\"score\": 1}";
  script_.delay_ms = 1500;
  config_.timeout = 0.3;
  EXPECT_NE(reason().find("did not answer within"), std::string::npos);
  script_.wait_idle();
  server_->stopAll(true);
  server_.reset();  // closes the listening socket: nobody answers on the port now
  const std::string refused = reason();
  EXPECT_NE(refused.find("cannot reach the provider"), std::string::npos) << refused;
}

// https:// goes through the TLS module: against a server that answers in plain HTTP the
// handshake fails at once, and that is an LlmError like any other. (The server speaks first, so
// the result does not depend on whether the random ClientHello happens to hold a line break.)
TEST(LlmProviderTls, HttpsToAPlainServerFailsTheHandshake) {
  Poco::Net::ServerSocket listener(Poco::Net::SocketAddress("127.0.0.1", 0));
  std::thread server([&] {
    Poco::Net::StreamSocket peer = listener.acceptConnection();
    const std::string reply = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    peer.sendBytes(reply.data(), static_cast<int>(reply.size()));
    peer.shutdownSend();
  });
  LlmConfig config;
  config.base_url = "https://127.0.0.1:" + std::to_string(listener.address().port()) + "/v1";
  config.model = "test-model";
  config.timeout = 5;
  std::string error = "no error";
  try {
    ask_llm(config, {{"full_name", "Alice"}}, {{"score", 60}}, std::nullopt);
  } catch (const LlmError& e) {
    error = e.what();
  }
  server.join();
  EXPECT_NE(error.find("cannot reach the provider"), std::string::npos) << error;
}

TEST_F(LlmProvider, FallbackKeepsTheBuiltinAnalysisAndSaysWhy) {
  const json out = llm_fallback(builtin_, "cannot reach the provider: Connection refused");
  EXPECT_EQ(out["score"], 60);
  EXPECT_EQ(out["provider"], "builtin");
  EXPECT_EQ(out["llm"]["used"], false);
  EXPECT_EQ(out["llm"]["error"], "cannot reach the provider: Connection refused");
}

TEST(LlmConfig, FromJson) {
  EXPECT_FALSE(LlmConfig::from_json(nullptr));
  EXPECT_FALSE(LlmConfig::from_json({{"model", "m"}}));  // no base_url: not configured
  const auto c = LlmConfig::from_json({{"base_url", "http://x/v1"}, {"model", "m"}, {"timeout", 5}});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->timeout, 5);
  EXPECT_THROW(LlmConfig::from_json({{"base_url", "http://x"}, {"model", "m"}, {"modle", 1}}),
               ConfigError);
  EXPECT_THROW(LlmConfig::from_json({{"base_url", "http://x"}, {"model", "m"}, {"timeout", 0}}),
               ConfigError);
}

}  // namespace
}  // namespace cvtasks
