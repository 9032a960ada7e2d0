// PdfEngine: HTML to PDF with wkhtmltopdf run as a subprocess (Debian ships no libwkhtmltox).
//
// Lock-down, for every PDF: JavaScript off; local files off except the template's own asset
// folder (--allow) and the page itself; every network load goes to a proxy address that refuses
// connections (a loopback port this process holds bound and never listens on), so a CV cannot
// make wkhtmltopdf read /etc/passwd or call out. CV values are HTML-escaped before they get here
// (cv_renderer.h); this is the second wall.
//
// Warm processes: wkhtmltopdf --read-args-from-stdin renders one PDF per stdin line and stays
// alive, saving its ~60 ms start-up per PDF. The engine keeps up to `warm_processes` of them,
// started on first use; a PDF takes an idle one (or starts one, or waits). The page goes to a
// 0600 file in a private 0700 folder, since stdin carries the arguments. warm_processes = 0 runs
// one process per PDF, the HTML on stdin and the PDF on stdout.
//
// Failures throw TaskError(cvtasks.errors.PDFRenderError) with wkhtmltopdf's stderr in the
// message. Cancellation: RenderHooks::check is called while waiting; when it throws, the process
// is killed (its process group) and the exception propagates. `started`/`finished` report the
// pid so the worker's hard time limit can SIGKILL it; a killed warm process is replaced.
//
// Thread-safety: render() may be called from any number of threads.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cvtasks {

class TaskContext;

struct PdfOptions {
  std::string binary = "/usr/bin/wkhtmltopdf";  // tasks.pdf.wkhtmltopdf
  int warm_processes = 2;                       // tasks.pdf.warm_processes; 0 = one per PDF
  double render_timeout = 120;                  // seconds; guards against a hung process
};

struct RenderHooks {
  std::function<void(pid_t)> started;   // a process now works for this caller
  std::function<void(pid_t)> finished;  // ... and no longer does
  std::function<void()> check;          // throws to abandon the render
};

// Hooks that report to the task's context (own_process / check_cancelled).
RenderHooks hooks_for(TaskContext& ctx);

class PdfEngine {
 public:
  // Throws ConfigError when the binary is not executable; makes the private temp folder.
  explicit PdfEngine(PdfOptions options);
  ~PdfEngine();  // kills the warm processes, removes the temp folder
  PdfEngine(const PdfEngine&) = delete;
  PdfEngine& operator=(const PdfEngine&) = delete;

  // The PDF bytes of `html`; `asset_dir` is the only folder whose files the page may load.
  std::string render(const std::string& html, const std::string& asset_dir,
                     const RenderHooks& hooks = {});

  // The arguments every run gets (for the docs and the bench).
  std::vector<std::string> lockdown_args() const;
  const PdfOptions& options() const { return options_; }

 private:
  struct Process;
  std::string render_warm(const std::string& html, const std::string& asset_dir,
                          const RenderHooks& hooks);
  std::string render_once(const std::string& html, const std::string& asset_dir,
                          const RenderHooks& hooks);
  std::unique_ptr<Process> spawn(const std::vector<std::string>& extra) const;
  std::unique_ptr<Process> take(const RenderHooks& hooks);
  void give_back(std::unique_ptr<Process> p);
  void retire(std::unique_ptr<Process> p);

  PdfOptions options_;
  std::string tmpdir_;
  int blackhole_fd_ = -1;  // bound, never listening: the proxy that refuses every load
  int blackhole_port_ = 0;

  std::mutex mu_;
  std::condition_variable idle_cv_;
  std::vector<std::unique_ptr<Process>> idle_;
  int live_ = 0;
  unsigned long next_job_ = 0;
};

}  // namespace cvtasks
