;;; lsp-mode.el --- phi-lsp through lsp-mode (Debian elpa-lsp-mode), in batch mode  -*- lexical-binding: t -*-

;; Completion at the end of "    return" in add(); then add() becomes a stub and the code
;; action runs (its command is answered at once, the edit comes as workspace/applyEdit);
;; then again with the edit failing on the client's side, which lsp-mode answers with
;; `applied: false'.

(load (expand-file-name "harness.el" (file-name-directory load-file-name)) nil t)
(setq lsp-client-packages nil
      lsp-session-file (expand-file-name "lsp-session" (getenv "XDG_STATE_HOME"))
      lsp-auto-guess-root t
      lsp-guess-root-without-session t
      lsp-enable-file-watchers nil
      lsp-keep-workspace-alive nil
      lsp-restart 'ignore
      lsp-enable-snippet nil
      lsp-lens-enable nil
      lsp-headerline-breadcrumb-enable nil
      lsp-modeline-code-actions-enable nil
      lsp-modeline-diagnostics-enable nil
      lsp-modeline-workspace-status-enable nil
      lsp-log-io (and (getenv "PHI_LOG_IO") t))
(require 'lsp-mode)
(require 'lsp-completion)

(lsp-register-client
 (make-lsp-client :new-connection (lsp-stdio-connection (phi-env-json "PHI_CMD"))
                  :activation-fn (lsp-activate-on "python")
                  :initialization-options (phi-env-json "PHI_SETTINGS")
                  :server-id 'phi-lsp))
(advice-add 'lsp--window-show-message :before
            (lambda (_workspace params)
              (push (format "%s: %s" (gethash "type" params) (gethash "message" params))
                    phi-messages)))
;; The user's "no": the edit fails on this side, and lsp-mode answers `applied: false'.
(advice-add 'lsp--apply-workspace-edit :before
            (lambda (&rest _)
              (cl-incf phi-asked)
              (unless phi-answer (error "the user refused the edit"))))

(defun phi-generate (line)
  "Run the code action on add()'s def line; the command's answer."
  (phi-goto-line (- line 6))
  (let* ((actions (append (lsp-code-actions-at-point) nil))
         (command (gethash "command" (car actions))))
    (phi-put "actions" (vconcat (mapcar (lambda (a) (gethash "title" a)) actions)))
    (gethash "function" (lsp-workspace-command-execute (gethash "command" command)
                                                       (gethash "arguments" command)))))

(phi-run
 (lambda ()
   (let ((line (string-to-number (getenv "PHI_LINE"))))
     (lsp-workspace-folders-add (file-name-directory (getenv "PHI_FILE")))
     (find-file (getenv "PHI_FILE"))
     (python-mode)
     (lsp)
     (phi-wait-for (lambda () (and (lsp-workspaces)
                                   (eq (lsp--workspace-status (car (lsp-workspaces)))
                                       'initialized)))
                   "lsp-mode to initialize")
     ;; 1. Completion (empty while the model loads).
     (phi-put "completion"
              (vconcat
               (mapcar #'substring-no-properties
                       (phi-wait-for
                        (lambda ()
                          (phi-goto-line line)
                          (end-of-line)
                          (or (all-completions "" (nth 2 (lsp-completion-at-point)))
                              (progn (sleep-for 0.2) nil)))
                        "a completion item"))))
     ;; 2. The code action, applied.
     (phi-make-stub line)
     (let ((stub (buffer-string)))
       (setq phi-answer t)
       (phi-put "answer" (phi-generate line))
       (phi-put "after_accept"
                (phi-wait-for (lambda () (and (not (equal (buffer-string) stub))
                                              (buffer-string)))
                              "the body to be written"))
       ;; 3. Again on the stub, the edit refused.
       (erase-buffer)
       (insert stub)
       (setq phi-answer nil)
       (phi-put "answer_refused" (phi-generate line))
       (phi-wait-for (lambda () (= phi-asked 2)) "the second edit")
       (phi-put "actions_after" (length (lsp-code-actions-at-point)))
       (phi-put "after_refuse" (buffer-string)))
     (lsp-workspace-shutdown (car (lsp-workspaces))))))

;;; lsp-mode.el ends here
