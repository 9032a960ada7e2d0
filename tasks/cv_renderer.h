// CvRenderer: a CV (the JSON of cv_record.h) to the HTML that wkhtmltopdf prints, through a
// Mustache template. Every value is HTML-escaped ({{name}}); templates must not use the raw
// forms ({{{x}}}, {{&x}}) for CV data, and the shipped ones do not.
//
// Templates are folders `<dir>/<name>/cv.html` (plus the template's own assets: CSS, images,
// fonts, referenced through {{assets}}, the folder as a file: URL). Directories are searched in
// order: the project's `tasks.pdf.templates_dir`, then the shipped templates (next to the
// binary in ../share/cvtasks/templates, else the source tree's templates/cv).
//
// The template sees the CV's fields (cv_record.h), `has_<list>` for each non-empty list,
// `assets` and `template`.
//
// Thread-safety: immutable after construction; templates are read from disk on each render so
// a project can edit its templates without a restart.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cvtasks {

using json = nlohmann::json;

struct RenderedHtml {
  std::string html;
  std::string asset_dir;  // absolute folder of the template: the only files wkhtmltopdf may read
  std::string template_name;
};

class CvRenderer {
 public:
  // `project_dir` may be empty. `default_template` is used when render() gets none.
  CvRenderer(std::string project_dir, std::string default_template);

  // Throws TaskError(ValueError) for an unknown or malformed template name, and
  // TaskError(cvtasks.errors.TemplateError) for a template Mustache cannot parse.
  RenderedHtml render(const json& cv, const std::optional<std::string>& template_name) const;
  // The folders searched, in order.
  const std::vector<std::string>& search_path() const { return dirs_; }
  // Template names found on the search path (sorted, first one wins).
  std::vector<std::string> available() const;
  const std::string& default_template() const { return default_template_; }

 private:
  std::vector<std::string> dirs_;
  std::string default_template_;
};

// The shipped templates' folder: ../share/cvtasks/templates beside the executable when it
// exists, else the source tree's templates/cv.
std::string shipped_templates_dir();

}  // namespace cvtasks
