// cvtasks.tasks.cleanup: keeps the request log and MEDIA_ROOT/cv_pdfs from growing forever.
//
// Deleting is the point here, so every rule leans towards keeping: the cutoff is exact (a row
// exactly `days` old stays), every file goes through media_files.h (nothing outside MEDIA_ROOT,
// no symlink followed or removed), and rows are deleted in short batches so a live table is
// never locked for long.
#include <limits>
#include <optional>
#include <set>

#include "core/base/json_numbers.h"
#include "core/base/isotime.h"
#include "core/protocol/task_error.h"
#include "media_files.h"
#include "services.h"

namespace cvtasks {
namespace {

// Rows per DELETE. Each statement runs in its own (autocommit) transaction, so the lock it takes
// lasts one batch; the middleware writing request logs waits at most that long.
constexpr size_t kBatch = 1000;
// How many names a result lists (the counts are always exact).
constexpr size_t kListed = 100;
const char* const kPdfFolder = "cv_pdfs";

struct CleanupArgs {
  int64_t days = 0;
  bool dry_run = false;
};

// `days` (when the task has it; `default_days`) and `dry_run`, checked as Python would.
CleanupArgs cleanup_args(const Arguments& args, std::optional<int64_t> default_days) {
  CleanupArgs out{default_days.value_or(0), false};
  if (const auto d = default_days ? args.get("days") : std::nullopt; d && !d->is_null()) {
    // A big integer is an int too: integer_argument says it does not fit (OverflowError).
    if (!d->is_number() && !is_big_integer(*d)) throw type_error("days must be an int");
    out.days = integer_argument(*d, "days");
    if (out.days < 0 || out.days > 100000)
      throw TaskError("ValueError", "days must be between 0 and 100000");
  }
  if (const auto d = args.get("dry_run"); d && !d->is_null()) {
    if (!d->is_boolean()) throw type_error("dry_run must be a bool");
    out.dry_run = d->get<bool>();
  }
  return out;
}

TimePoint cutoff_of(TaskServices& services, int64_t days) {
  return services.clock().now() - std::chrono::hours(24) * days;
}

// `model.created_at < cutoff`, with the cutoff parameter appended to `params`.
std::string older_than(const SchemaMap& s, const std::string& model, TimePoint cutoff,
                       json& params) {
  params.push_back(s.datetime(cutoff));
  return s.column(model, "created_at") + " < " + s.placeholder(model, "created_at");
}

json cleanup_old_logs(TaskServices& services, TaskContext& ctx, const json& a, const json& k) {
  const CleanupArgs args =
      cleanup_args(Arguments("cleanup_old_logs", a, k, {"days", "dry_run"}, 0), 30);
  const TimePoint cutoff = cutoff_of(services, args.days);
  return services.with_database(ctx, [&] {
    Database& db = services.database();
    const SchemaMap& s = services.schema();
    const std::string table = s.table("request_log"), pk = s.pk("request_log");
    json params = json::array();
    const std::string where = older_than(s, "request_log", cutoff, params);
    size_t deleted = 0;
    if (args.dry_run) {
      deleted = numeric(db.query("SELECT COUNT(*) AS n FROM " + table + " WHERE " + where,
                                 params)[0]["n"])
                    .get<size_t>();
    } else {
      // MySQL refuses LIMIT inside IN (...) but has DELETE ... LIMIT; the others the reverse.
      const std::string batch =
          s.dialect() == Dialect::MySQL
              ? "DELETE FROM " + table + " WHERE " + where + " ORDER BY " + pk + " LIMIT " +
                    std::to_string(kBatch)
              : "DELETE FROM " + table + " WHERE " + pk + " IN (SELECT " + pk + " FROM " + table +
                    " WHERE " + where + " LIMIT " + std::to_string(kBatch) + ")";
      for (;;) {
        const size_t n = db.execute(batch, params);
        deleted += n;
        if (n < kBatch) break;
        ctx.check_cancelled();
      }
    }
    return json{{"deleted", deleted}, {"cutoff", format_iso8601_utc(cutoff)},
                {"dry_run", args.dry_run}};
  });
}

json cleanup_old_pdf_files(TaskServices& services, TaskContext& ctx, const json& a,
                           const json& k) {
  const CleanupArgs args =
      cleanup_args(Arguments("cleanup_old_pdf_files", a, k, {"days", "dry_run"}, 0), 7);
  const TimePoint cutoff = cutoff_of(services, args.days);
  const std::string root = services.media_root();
  return services.with_database(ctx, [&] {
    Database& db = services.database();
    const SchemaMap& s = services.schema();
    const std::string table = s.table("generated_pdf"), pk = s.pk("generated_pdf");
    size_t rows = 0, files = 0, missing = 0, refused = 0;
    json refused_files = json::array();
    // Keyset pagination: refused rows stay, so each batch starts after the last id seen.
    int64_t after = std::numeric_limits<int64_t>::min();
    for (;;) {
      json params = json::array();
      const std::string where = older_than(s, "generated_pdf", cutoff, params);
      params.push_back(after);
      const auto batch = db.query("SELECT " + pk + " AS id, " + s.select("generated_pdf", "file") +
                                      " FROM " + table + " WHERE " + where + " AND " + pk +
                                      " > ? ORDER BY " + pk + " LIMIT " + std::to_string(kBatch),
                                  params);
      json gone = json::array();
      for (const auto& row : batch) {
        after = row["id"].get<int64_t>();
        const std::string file = row["file"].is_string() ? row["file"].get<std::string>() : "";
        switch (remove_media_file(root, file, args.dry_run)) {
          case RemoveOutcome::kRemoved:
            ++files;
            gone.push_back(after);
            break;
          case RemoveOutcome::kMissing:
            ++missing;
            gone.push_back(after);
            break;
          case RemoveOutcome::kRefused:
            // Not a plain file inside MEDIA_ROOT: neither it nor its row is ours to drop.
            if (++refused <= kListed) refused_files.push_back({{"id", after}, {"file", file}});
            break;
        }
      }
      if (!gone.empty() && !args.dry_run) {
        std::string marks;
        for (size_t i = 0; i < gone.size(); ++i) marks += i ? ", ?" : "?";
        db.execute("DELETE FROM " + table + " WHERE " + pk + " IN (" + marks + ")", gone);
      }
      rows += gone.size();
      if (batch.size() < kBatch) break;
      ctx.check_cancelled();
    }
    return json{{"deleted_rows", rows}, {"deleted_files", files}, {"missing_files", missing},
                {"refused", refused}, {"refused_files", refused_files}, {"cutoff", format_iso8601_utc(cutoff)},
                {"dry_run", args.dry_run}};
  });
}

json cleanup_orphaned_files(TaskServices& services, TaskContext& ctx, const json& a,
                            const json& k) {
  const CleanupArgs args =
      cleanup_args(Arguments("cleanup_orphaned_files", a, k, {"dry_run"}, 0), std::nullopt);
  const std::string root = services.media_root();
  const auto grace =
      span<TimePoint::duration>(services.cleanup_options().orphan_grace_minutes * 60.0);
  const TimePoint settled = services.clock().now() - grace;
  return services.with_database(ctx, [&] {
    const SchemaMap& s = services.schema();
    // Listed first: a PDF written after this line is younger than the grace period anyway.
    const auto on_disk = list_media_files(root, kPdfFolder);
    std::set<std::string> referenced;
    for (const auto& row : services.database().query(
             "SELECT " + s.select("generated_pdf", "file") + " FROM " + s.table("generated_pdf")))
      if (row["file"].is_string())
        if (auto rel = media_relative(row["file"].get<std::string>())) referenced.insert(*rel);
    size_t deleted = 0, recent = 0;
    json names = json::array();
    for (const auto& f : on_disk) {
      if (referenced.count(f.relative)) continue;
      // Still being written (pdf.cpp's temporary file), or written just before its row.
      if (f.modified > settled) {
        ++recent;
        continue;
      }
      if (remove_media_file(root, f.relative, args.dry_run) != RemoveOutcome::kRemoved) continue;
      ++deleted;
      if (names.size() < kListed) names.push_back(f.relative);
      if (deleted % kBatch == 0) ctx.check_cancelled();
    }
    return json{{"deleted", deleted}, {"files", names}, {"kept_recent", recent},
                {"grace_minutes", services.cleanup_options().orphan_grace_minutes},
                {"dry_run", args.dry_run}};
  });
}

}  // namespace

void register_cleanup_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services) {
  const std::string p = "cvtasks.tasks.cleanup.";
  using Fn = json (*)(TaskServices&, TaskContext&, const json&, const json&);
  for (const auto& [name, fn] : {std::pair<const char*, Fn>{"cleanup_old_logs", cleanup_old_logs},
                                 {"cleanup_old_pdf_files", cleanup_old_pdf_files},
                                 {"cleanup_orphaned_files", cleanup_orphaned_files}})
    registry.add(std::make_unique<DomainTask>(
        p + name, [services, fn = fn](TaskContext& ctx, const json& a, const json& k) {
          return fn(*services, ctx, a, k);
        }));
}

}  // namespace cvtasks
