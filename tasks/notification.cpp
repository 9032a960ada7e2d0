// cvtasks.tasks.notification: the email module's three notifications, with the same behaviour,
// under the notification module's names (so they route to notification_queue).
#include "services.h"

namespace cvtasks {

void register_notification_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services) {
  register_notifications(registry, services, "notification");
}

}  // namespace cvtasks
