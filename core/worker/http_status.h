// StatusServer: the worker's optional HTTP port (--http-port) for /healthz and /metrics.
// Poco's HTTPServer with a couple of threads of its own: a scrape never touches the pool.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

namespace Poco::Net {
class HTTPServer;
}

namespace cvtasks {

struct StatusPage {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class StatusServer {
 public:
  // path -> page maker; called on the server's threads (must be thread-safe); an exception
  // becomes a 500 page. Other paths get 404.
  using Routes = std::map<std::string, std::function<StatusPage()>>;

  // Listens on host:port (port 0: any free port). Throws ConfigError when it cannot bind.
  StatusServer(const std::string& host, int port, Routes routes);
  ~StatusServer();  // stops serving

  int port() const;

 private:
  std::unique_ptr<Poco::Net::HTTPServer> server_;
};

}  // namespace cvtasks
