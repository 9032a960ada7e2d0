#include "domain_tasks.h"

#include "services.h"

namespace cvtasks {

void register_domain_tasks(TaskRegistry& registry, const Settings& settings) {
  auto services = std::make_shared<TaskServices>(settings);
  register_pdf_tasks(registry, services);
  register_email_tasks(registry, services);
  register_notification_tasks(registry, services);
  register_analysis_tasks(registry, services);
  register_cleanup_tasks(registry, services);
  register_statistics_tasks(registry, services);
}

}  // namespace cvtasks
