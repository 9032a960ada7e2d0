#include "http_status.h"

#include <Poco/Exception.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/URI.h>

#include <spdlog/spdlog.h>

#include "core/base/errors.h"

namespace cvtasks {
namespace {

using Poco::Net::HTTPServerRequest;
using Poco::Net::HTTPServerResponse;

class PageHandler final : public Poco::Net::HTTPRequestHandler {
 public:
  explicit PageHandler(const StatusServer::Routes& routes) : routes_(routes) {}

  void handleRequest(HTTPServerRequest& request, HTTPServerResponse& response) override {
    StatusPage page;
    const std::string path = Poco::URI(request.getURI()).getPath();
    auto it = routes_.find(path);
    if (request.getMethod() != "GET" && request.getMethod() != "HEAD") {
      page = {405, "text/plain; charset=utf-8", "method not allowed\n"};
    } else if (it == routes_.end()) {
      page = {404, "text/plain; charset=utf-8", "not found (try /healthz or /metrics)\n"};
    } else {
      try {
        page = it->second();
      } catch (const std::exception& e) {
        spdlog::error("HTTP {}: {}", path, e.what());
        page = {500, "text/plain; charset=utf-8", std::string(e.what()) + "\n"};
      }
    }
    response.setStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(page.status));
    response.setContentType(page.content_type);
    response.setContentLength(static_cast<std::streamsize>(page.body.size()));
    auto& out = response.send();
    if (request.getMethod() != "HEAD") out << page.body;
  }

 private:
  const StatusServer::Routes& routes_;
};

class Factory final : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit Factory(StatusServer::Routes routes) : routes_(std::move(routes)) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(const HTTPServerRequest&) override {
    return new PageHandler(routes_);
  }

 private:
  StatusServer::Routes routes_;
};

}  // namespace

StatusServer::StatusServer(const std::string& host, int port, Routes routes) {
  try {
    Poco::Net::ServerSocket socket(
        Poco::Net::SocketAddress(host, static_cast<Poco::UInt16>(port)));
    auto params = new Poco::Net::HTTPServerParams;
    params->setMaxThreads(2);
    params->setMaxQueued(16);
    params->setKeepAlive(false);
    server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(std::move(routes)), socket,
                                                      params);
    server_->start();
  } catch (const Poco::Exception& e) {
    throw ConfigError("cannot serve HTTP on " + host + ":" + std::to_string(port) + ": " +
                      e.displayText());
  }
}

StatusServer::~StatusServer() {
  if (server_) server_->stopAll(true);
}

int StatusServer::port() const { return server_->port(); }

}  // namespace cvtasks
